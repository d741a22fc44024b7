"""The on-disk index of one output: each key's latest outcome, and the keys of the input.

Which rows are done, which changed, which repeat a key already read and which left the
input are questions about every key of an output that may hold tens of millions of rows,
so the answers live in a SQLite database, not in Python sets: memory stays at SQLite's page
cache (:data:`CACHE_KIB`) whatever the output's size. It is a temporary database: its pages
stay in that cache while they fit, and beyond that spill to a file SQLite creates, and
unlinks at once, in its temporary folder (``SQLITE_TMPDIR``, else ``TMPDIR``, else
``/var/tmp``), so a crash leaves nothing behind. Every run (and ``plan``) rebuilds it from
the files that are the truth: the output, the failures file and the journals.

Outcomes are *events*, numbered by where they are: a source number (one per file, oldest
first) and a row position inside it. A later event of a key replaces the earlier one, so a
key has exactly one outcome (a result, or a failure of some kind) and the merge at the end
of a run keeps exactly the rows that are their key's latest event. DuplicateKey records
say something about the input, not about a key's result, so they are kept apart.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from enum import IntEnum
from typing import Any, TypeVar, cast

import numpy as np
import polars as pl

from pipelines.core.columns import KEY
from pipelines.core.errors import OutputError

# SQLite's page cache for the index; the rest of the file is read from the disk (the OS
# cache), so this is the index's whole share of the memory however many keys it holds.
CACHE_KIB = 16 * 1024

_SCHEMA = """
CREATE TABLE keys (
    key TEXT PRIMARY KEY,
    src INTEGER, pos INTEGER, hash TEXT, state INTEGER,  -- the latest outcome
    dsrc INTEGER, dpos INTEGER,                          -- the latest DuplicateKey record
    dup INTEGER NOT NULL DEFAULT 0,                      -- 1 recorded, 2 repeated in this input
    seen INTEGER NOT NULL DEFAULT 0, ihash TEXT,         -- read from the input (its hash)
    missing INTEGER NOT NULL DEFAULT 0,                  -- image jobs: the row's file is gone
    flight INTEGER NOT NULL DEFAULT 0                    -- 1: in a Batch API payload in flight
) WITHOUT ROWID;
CREATE TEMP TABLE q (i INTEGER PRIMARY KEY, key TEXT NOT NULL);
"""

_OUTCOME = (
    "INSERT INTO keys(key, src, pos, hash, state) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT(key) DO UPDATE SET src = excluded.src, pos = excluded.pos, "
    "hash = excluded.hash, state = excluded.state"
)
_DUPLICATE = (
    "INSERT INTO keys(key, dsrc, dpos, dup) VALUES (?, ?, ?, 1) "
    "ON CONFLICT(key) DO UPDATE SET dsrc = excluded.dsrc, dpos = excluded.dpos, "
    "dup = MAX(dup, 1)"
)
# the first row of a key in the input decides its hash; a repeat changes nothing
_SEEN = (
    "INSERT INTO keys(key, seen, ihash) VALUES (?, 1, ?) "
    "ON CONFLICT(key) DO UPDATE SET seen = 1, ihash = excluded.ihash WHERE seen = 0"
)


_M = TypeVar("_M", bound=Callable[..., Any])


def _locked(method: _M) -> _M:
    """One caller at a time: a run's threads take turns, but a cancelled producer may still
    be reading while the merge starts, and one connection must not interleave them."""

    @functools.wraps(method)
    def wrapper(self: OutputIndex, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return cast(_M, wrapper)


class State(IntEnum):
    """A key's latest outcome."""

    RESULT = 0  # in the output
    FAILED = 1  # failed for good (not sent again unless --retry-failed, or it changes)
    RETRY = 2  # failed for now (retries ran out): tried again by every run
    TOO_LONG = 3  # failed for good as too long: pending again once task.truncate is on


class OutputIndex:
    """Every key of an output with its latest outcome, and the keys of this run's input."""

    def __init__(self, *, retry_failed: bool = False, repair: bool = False) -> None:
        #: Keys that failed for good count as pending (``--retry-failed``).
        self.retry_failed = retry_failed
        #: Keys whose image file is missing count as pending (``--repair``).
        self.repair = repair
        self._lock = threading.RLock()
        try:
            # "": a private temporary database (see the module's docstring); used from the
            # run's worker threads, one at a time (see _locked)
            self._conn = sqlite3.connect("", isolation_level=None, check_same_thread=False)
            for pragma in (
                "journal_mode = OFF",  # rebuilt by every run: nothing to roll back to
                "synchronous = OFF",
                f"cache_size = -{CACHE_KIB}",
            ):
                self._conn.execute(f"PRAGMA {pragma}")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise self._problem(exc) from exc
        #: The input was read to its end: keys not seen have left it.
        self.complete = False

    @staticmethod
    def _problem(exc: sqlite3.Error) -> OutputError:
        full = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == sqlite3.SQLITE_FULL
        reason = "no space left on the disk" if full else " ".join(str(exc).split())
        return OutputError(
            "could not keep the index of the output's keys in SQLite's temporary folder "
            f"(SQLITE_TMPDIR, TMPDIR or /var/tmp: {reason or type(exc).__name__}); free "
            "some space there, or point SQLITE_TMPDIR at a disk with room, and re-run: the "
            "output is intact and the results so far are kept"
        )

    def _write(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        # one transaction per call: a statement per row would be a commit per row
        try:
            self._conn.execute("BEGIN")
            self._conn.executemany(sql, rows)
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            raise self._problem(exc) from exc

    @_locked
    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()

    # -- events ----------------------------------------------------------------------------

    @_locked
    def add_outcomes(
        self,
        src: int,
        positions: Sequence[int],
        keys: Sequence[str],
        hashes: Sequence[str | None],
        states: Sequence[int],
    ) -> None:
        """Rows at ``positions`` of source ``src``: each its key's latest outcome."""
        rows = zip(keys, [src] * len(keys), positions, hashes, states, strict=True)
        self._write(_OUTCOME, rows)

    @_locked
    def set_missing(self, keys: Sequence[str], missing: Sequence[bool]) -> None:
        """Whether each key's file (an image job's) is missing; a later call overrides."""
        self._write(
            "UPDATE keys SET missing = ? WHERE key = ?",
            zip((int(m) for m in missing), keys, strict=True),
        )

    @_locked
    def add_duplicates(self, src: int, positions: Sequence[int], keys: Sequence[str]) -> None:
        """DuplicateKey records at ``positions`` of source ``src``."""
        self._write(_DUPLICATE, zip(keys, [src] * len(keys), positions, strict=True))

    @_locked
    def add_in_flight(self, keys: Sequence[str]) -> None:
        """Keys whose rows are in a Batch API payload not collected yet: not sent again
        (their outcome, if any, stays the latest until the payload's arrives)."""
        self._write(
            "INSERT INTO keys(key, flight) VALUES (?, 1) ON CONFLICT(key) DO UPDATE SET flight = 1",
            ((k,) for k in keys),
        )

    # -- the input -------------------------------------------------------------------------

    def _query(self, keys: Sequence[str]) -> None:
        self._conn.execute("DELETE FROM q")
        self._write("INSERT INTO q(i, key) VALUES (?, ?)", enumerate(keys))

    @_locked
    def observe(self, keys: pl.Series, hashes: pl.Series) -> pl.DataFrame:
        """Look up a batch of input rows, then remember them as read.

        One row per input row, in order: ``first`` (no earlier row of the input has its
        key), ``state`` (its key's latest outcome, null: none), ``same`` (that outcome was
        for the same content, or for content not known), ``recorded`` (its key already
        has a DuplicateKey record), ``missing`` (its image file is gone) and ``flight`` (its
        key is in a Batch API payload in flight)."""
        frame = pl.DataFrame({KEY: keys, "_h": hashes})
        in_batch = frame.get_column(KEY).is_first_distinct()
        firsts = frame.filter(in_batch)
        self._query(firsts.get_column(KEY).to_list())
        found = pl.DataFrame(
            self._conn.execute(
                "SELECT q.key, k.hash, k.state, k.seen, k.dup, k.missing, k.flight "
                "FROM q JOIN keys k USING (key)"
            ).fetchall(),
            schema={
                KEY: pl.Utf8,
                "_stored": pl.Utf8,
                "state": pl.Int8,
                "_seen": pl.Int8,
                "_dup": pl.Int8,
                "_missing": pl.Int8,
                "_flight": pl.Int8,
            },
            orient="row",
        )
        self._write(_SEEN, firsts.iter_rows())
        joined = frame.with_columns(in_batch.alias("_first")).join(
            found, on=KEY, how="left", maintain_order="left"
        )
        return joined.select(
            (pl.col("_first") & (pl.col("_seen").fill_null(0) == 0)).alias("first"),
            pl.col("state"),
            (pl.col("_stored").is_null() | (pl.col("_stored") == pl.col("_h"))).alias("same"),
            (pl.col("_dup").fill_null(0) > 0).alias("recorded"),
            (pl.col("_missing").fill_null(0) > 0).alias("missing"),
            (pl.col("_flight").fill_null(0) > 0).alias("flight"),
        )

    @_locked
    def mark_repeated(self, keys: Iterable[str]) -> None:
        """These keys repeat in this input (their DuplicateKey records stay)."""
        self._write("UPDATE keys SET dup = 2 WHERE key = ?", ((k,) for k in keys))

    def input_read(self) -> None:
        """The whole input was read: a key not seen has left it."""
        self.complete = True

    # -- counts ----------------------------------------------------------------------------

    @_locked
    def _count(self, where: str) -> int:
        (n,) = self._conn.execute(f"SELECT COUNT(*) FROM keys WHERE {where}").fetchone()
        return int(n)

    @property
    def height(self) -> int:
        """Keys that are done: in the output, or failed for good."""
        done = (State.RESULT, State.FAILED, State.TOO_LONG)
        return self._count(f"state IN ({', '.join(str(int(s)) for s in done)})")

    def failure_count(self) -> int:
        """Failure records: keys whose latest outcome is a failure, and DuplicateKey ones."""
        return self._count("state > 0") + self._count("dsrc IS NOT NULL")

    def missing_count(self) -> int:
        """Image rows of the output whose file is missing (or not the size the row says)."""
        return self._count(f"state = {int(State.RESULT)} AND missing = 1")

    def removed_count(self) -> int:
        """Output rows whose key is not in the input (once it was read to its end)."""
        return self._count(f"state = {int(State.RESULT)} AND seen = 0") if self.complete else 0

    # -- the merge -------------------------------------------------------------------------

    def drops_anything(self, *, sync: bool) -> bool:
        """Whether a merge without new events would still drop a record: a DuplicateKey
        record whose key no longer repeats, or (``sync``) a key that left the input."""
        if not self.complete:
            return False
        if self._count("dsrc IS NOT NULL AND dup < 2"):
            return True
        return sync and bool(self._count("state IS NOT NULL AND seen = 0"))

    @_locked
    def winners(
        self, src: int, start: int, keys: Sequence[str], *, failures: bool, sync: bool
    ) -> tuple[np.ndarray, list[str | None]]:
        """Which of rows ``start, ...`` of source ``src`` to keep (their indices), and the
        input's hash of each kept row's key (null where the input was not read).

        A row is kept when it is its key's latest outcome (of the right kind: a result in
        the output, a failure in the failures file) or its key's latest DuplicateKey record
        while the key still repeats; with ``sync``, not when its key left the input."""
        self._query(keys)
        gone = "k.seen = 0" if self.complete and sync else "0"
        if failures:
            still = "k.dup = 2" if self.complete else "1"
            latest = (
                f"(k.src = ? AND k.pos = ? + q.i AND k.state > {int(State.RESULT)}) "
                f"OR (k.dsrc = ? AND k.dpos = ? + q.i AND {still})"
            )
            args: tuple[int, ...] = (src, start, src, start)
        else:
            latest = f"k.src = ? AND k.pos = ? + q.i AND k.state = {int(State.RESULT)}"
            args = (src, start)
        sql = (
            "SELECT q.i, k.ihash FROM q JOIN keys k USING (key) "
            f"WHERE NOT ({gone}) AND ({latest}) ORDER BY q.i"
        )
        try:
            rows = self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise self._problem(exc) from exc
        kept = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return kept, [r[1] for r in rows]
