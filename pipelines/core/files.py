"""Durable atomic file writes: a reader sees the old file or the new one, never half of one.

The new content goes to a temporary file in the target's own folder (a rename is atomic
only within one file system), is fsync'ed, renamed over the target, and the folder is
fsync'ed so the rename itself survives a power cut. A failure at any step removes the
temporary file and leaves the target as it was.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

# Temporary names are ``.<name>.tmp-<8 hex>``: hidden, and easy to sweep after a crash
# (``tmp_pattern``). The job checks keep output names short enough for this suffix.
_TMP_INFIX = ".tmp-"


def tmp_pattern(path: Path) -> str:
    """A glob, relative to ``path``'s folder, matching the temporary files of ``path``."""
    return f".{path.name}{_TMP_INFIX}*"


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reserve_tmp(path: Path) -> Path:
    """Create an empty, unique temporary file next to ``path`` (mode as umask allows)."""
    while True:
        tmp = path.with_name(f".{path.name}{_TMP_INFIX}{os.urandom(4).hex()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp


@contextlib.contextmanager
def atomic_path(path: Path, *, sync_dir: bool = True) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to (a streaming writer such as a
    ParquetWriter opens it itself); when the block ends without an exception it replaces
    ``path`` durably, otherwise it is removed and ``path`` is untouched. ``sync_dir=False``
    leaves the folder's fsync to the caller (who writes many files, then syncs once).

    Raises :class:`OSError` from any step; the caller turns it into a typed error.
    """
    tmp = _reserve_tmp(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if sync_dir:
        fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes | str, *, sync_dir: bool = True) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8), durably and atomically."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path, sync_dir=sync_dir) as tmp, open(tmp, "wb") as fh:
        fh.write(payload)
