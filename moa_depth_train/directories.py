"""Directories a config names (``run.out_dir``, ``data.cache_dir``): checked before any work,
created when first written, and every failure said in one line that names the setting:
"run.out_dir '/x': permission denied", not "[Errno 13] Permission denied: '/x'"."""

from __future__ import annotations

import os
from pathlib import Path

from moa_depth_ros.errors import one_line

__all__ = ["DirectoryError", "check_writable_dir", "make_dir", "setting_error"]


class DirectoryError(ValueError):
    """A directory a setting names cannot be used; one line naming the setting."""


def _file_in_the_way(path: Path) -> Path | None:
    """The first existing component of ``path`` (from the root down) that is not a directory."""
    for part in (*reversed(path.parents), path):
        if part.exists() and not part.is_dir():
            return part
    return None


def setting_error(setting: str, path: str | Path, err: OSError) -> DirectoryError:
    """``err``, raised for ``path`` or for a file in it, as one line naming ``setting``."""
    path = Path(path)
    where = f"{setting} '{path}'"
    blocker = _file_in_the_way(Path(err.filename)) if err.filename else None
    if blocker is not None or isinstance(err, (FileExistsError, NotADirectoryError)):
        return DirectoryError(f"{where}: '{blocker or path}' is a file, not a directory")
    reason = (err.strerror or one_line(err)).lower()
    detail = f" ({err.filename})" if err.filename and str(err.filename) != str(path) else ""
    return DirectoryError(f"{where}: {reason}{detail}")


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_writable_dir(path: str | Path, setting: str) -> Path:
    """``path`` if it is, or could be created as, a writable directory; DirectoryError naming
    ``setting`` otherwise. Creates nothing: a run that never starts leaves no trace."""
    path = Path(path)
    blocker = _file_in_the_way(path)
    if blocker is not None:
        raise DirectoryError(f"{setting} '{path}': '{blocker}' is a file, not a directory")
    existing = path
    while not existing.is_dir() and existing.parent != existing:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        reason = "read-only file system" if _read_only(existing) else "permission denied"
        inside = "" if existing == path else f" (cannot create it in '{existing}')"
        raise DirectoryError(f"{setting} '{path}': {reason}{inside}")
    return path


def make_dir(path: str | Path, setting: str) -> Path:
    """Create ``path`` (and its parents) if needed; DirectoryError naming ``setting``."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise setting_error(setting, path, err) from err
    return path
