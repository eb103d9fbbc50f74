"""Local output folders (a store's `--out`, a report's `--out`): checked before any work, and write
failures (a read-only file system, a file in the way, a full disk) turned into one DataError line naming
the path, never a traceback.

    out = output_folder(Path("store/nih768"), "store folder")  # created if needed, proven writable
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from thoraxmae.datasets.errors import DataError

__all__ = ["output_folder", "reason", "remove_if_empty"]


def output_folder(path: Path, what: str = "output folder") -> Path:
    """`path` as a folder that exists and takes a new file: created with its parents when missing (DataError
    naming it when that, or writing in it, fails). Returns the path."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"{path}: exists and is not a folder; give another {what}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise DataError(f"{path}: cannot write the {what} here ({reason(exc)})") from None
    return path


def reason(exc: OSError) -> str:
    """A one-line reason for a failed write; a full disk says so whichever library raised it."""
    if exc.errno == errno.ENOSPC or "No space left on device" in str(exc):
        return "no space left on the device"
    if exc.errno == errno.EDQUOT or "Disk quota exceeded" in str(exc):
        return "disk quota exceeded"
    text = exc.strerror or str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def remove_if_empty(*folders: Path) -> None:
    """Remove each folder that holds nothing (innermost first); leave any that holds a file."""
    for folder in folders:
        with contextlib.suppress(OSError):
            os.rmdir(folder)
