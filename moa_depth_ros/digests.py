"""SHA-256 of files: the one helper for checkpoints' sources, bags, downloads and --init.

Reads in blocks (``hashlib.file_digest`` is Python 3.11+; ROS 2 Humble runs 3.10).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_sha256"]

_BLOCK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """The hex SHA-256 of the file at ``path`` (what ``sha256sum`` prints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
