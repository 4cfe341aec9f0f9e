"""A bag's identity for checkpoint metadata and the frame cache: name, size and SHA-256."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from moa_depth_ros.digests import file_sha256
from moa_depth_train.bag_source import BagDataError

__all__ = ["bag_fingerprint"]


def _bag_files(path: Path) -> list[Path]:
    """The files a bag consists of: itself, or every file under its directory."""
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    raise BagDataError(f"bag '{path}' does not exist")


def _file_sha256(path: Path, memo: dict[str, str]) -> str:
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    if key not in memo:
        memo[key] = file_sha256(path)
    return memo[key]


def bag_fingerprint(path: str | Path, memo_file: Path | None = None) -> dict[str, Any]:
    """``{"name", "bytes", "sha256"}`` of a bag: a file's own SHA-256 (what ``sha256sum``
    prints); a directory's over ``"<relative name> <sha256>\\n"`` of its files in name order.

    ``memo_file`` (JSON) remembers file hashes by path, size and mtime, so a run on a
    multi-gigabyte bag that has not changed does not read it all again just to hash it.
    """
    path = Path(path)
    files = _bag_files(path)
    memo: dict[str, str] = {}
    if memo_file is not None and memo_file.is_file():
        try:
            memo = json.loads(memo_file.read_text())
        except (OSError, ValueError):
            memo = {}  # a damaged memo only costs a re-hash
    before = dict(memo)
    if path.is_file():
        digest = _file_sha256(path, memo)
    else:
        lines = "".join(f"{f.relative_to(path)} {_file_sha256(f, memo)}\n" for f in files)
        digest = hashlib.sha256(lines.encode()).hexdigest()
    if memo_file is not None and memo != before:
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_file.with_name(f"{memo_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo, indent=0, sort_keys=True))
        tmp.replace(memo_file)
    return {"name": path.name, "bytes": sum(f.stat().st_size for f in files), "sha256": digest}
