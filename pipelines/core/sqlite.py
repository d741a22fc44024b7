"""Opening the SQLite files several processes share (the neuron ledger, the result cache).

:func:`open_database` creates the folder, opens the file in WAL mode with a busy timeout,
sets up the schema and proves the file can be written, retrying while a neighbour process
holds the lock it needs (switching a new file to WAL takes a moment of exclusive access,
and SQLite reports ``SQLITE_BUSY`` there without waiting on the busy timeout). Anything
else — a file that is not a database, one that cannot be opened or written, a folder that
cannot be created — is a :class:`~pipelines.core.errors.StateError` naming the file and
what to do, on one line.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from pipelines.core.errors import StateError

_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_DAMAGED = frozenset({sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT})
_DENIED = frozenset(
    {sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_AUTH}
)


def _primary_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF  # extended codes carry it in the low byte


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` means another connection holds the lock (worth retrying)."""
    return _primary_code(exc) in _BUSY


def database_problem(
    path: Path, what: str, exc: sqlite3.Error, forgets: str = "", *, opening: bool = True
) -> StateError:
    """The one-line :class:`StateError` for ``exc``, met opening (or, with ``opening``
    false, using) the ``what`` at ``path``."""
    code = _primary_code(exc)
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if not opening and code in _BUSY:
        return StateError(
            f"the {what} {path} stayed locked by another process ({reason}); try again, and "
            "look for a process that holds it open"
        )
    if not opening and code in {*_DENIED, sqlite3.SQLITE_IOERR}:
        return StateError(
            f"cannot write the {what} {path} any more ({reason}): the file, its folder or "
            "its disk was made read-only; make them writable again, then re-run"
        )
    if code in _DAMAGED:
        return StateError(
            f"{path} is not a SQLite database or is damaged ({reason}), so the {what} cannot "
            f"be used; restore it from a backup, or move it away to start a new one{forgets}"
        )
    if code in _DENIED:
        return StateError(
            f"cannot open the {what} {path} for reading and writing ({reason}); make the file "
            "and its folder readable and writable by this user, or set PIPELINES_STATE_DIR "
            "to another folder"
        )
    if code == sqlite3.SQLITE_FULL:
        return StateError(f"the disk holding the {what} {path} is full; free some space")
    return StateError(f"cannot use the {what} {path} ({reason})")


def _setup(conn: sqlite3.Connection, schema: str, version: int, wal: bool) -> None:
    conn.execute("PRAGMA mmap_size = 0")
    # TRUNCATE keeps the (empty) journal file between transactions: nothing to create in
    # the folder per write, so a folder that turned read-only does not stop the file
    mode = "WAL" if wal else "TRUNCATE"
    if str(conn.execute(f"PRAGMA journal_mode = {mode}").fetchone()[0]).upper() != mode:
        raise sqlite3.OperationalError(f"cannot switch the journal to {mode} mode")
    # WAL + NORMAL never waits for the disk on commit. In rollback mode NORMAL would fsync
    # every transaction (~10 ms on a busy disk, twice per request for the ledger), so OFF:
    # a killed process loses nothing (the journal is in the OS's hands), only a power cut
    # can cost the last transactions or damage the file, which then refuses to open.
    conn.execute(f"PRAGMA synchronous = {'NORMAL' if wal else 'OFF'}")
    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
    # Always one write transaction, even with the schema in place: a file that can be read
    # but not written (read-only, immutable) fails here, not at the first row of a run.
    script = schema if current < version else ""
    conn.executescript(
        f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {max(current, version)};\nCOMMIT;"
    )


def open_database(
    path: Path,
    *,
    schema: str,
    what: str,
    version: int = 1,
    forgets: str = "",
    wal: bool = True,
    timeout_s: float = 30.0,
    attempts: int = 50,
    sleep: Callable[[float], None] = time.sleep,
) -> sqlite3.Connection:
    """A connection to ``path`` with ``schema`` (SQL statements, run once per ``version``),
    in autocommit mode and usable from any thread (callers serialise); in WAL mode, else
    with a rollback journal and no memory-mapped file at all.

    ``what`` names the file in messages ("neuron ledger"); ``forgets`` says what moving a
    damaged one away loses. Raises :class:`StateError` when the file cannot be used.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(
            f"cannot create the folder {path.parent} for the {what} ({exc.strerror or exc}); "
            "make it writable, or set PIPELINES_STATE_DIR to another folder"
        ) from exc
    try:
        # ``timeout`` is SQLite's busy timeout: how long a statement waits for a lock
        conn = sqlite3.connect(
            path, timeout=timeout_s, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise database_problem(path, what, exc, forgets) from exc
    try:
        for attempt in range(attempts):
            try:
                _setup(conn, schema, version, wal)
                return conn
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if not is_busy(exc):
                    raise database_problem(path, what, exc, forgets) from exc
                sleep(0.02 * (attempt + 1))
        raise StateError(
            f"the {what} {path} stayed locked by another process; try again, and look for "
            "a process that holds it open"
        )
    except BaseException:
        conn.close()
        raise
