"""The batch book: every Batch API payload of one output from before its submission until its
results are kept, durable across ``kill -9``.

A small SQLite file in the output's work folder (``batches.sqlite3``), written with
``synchronous = FULL``: each transaction is on the disk before the call returns. A payload
goes through it in this order, each step durable before the next begins:

1. **intent**: the payload's calls (items, rows, estimate) and the keys of its rows, before
   the budget is held and before anything is sent;
2. **submitted**: the ``request_id`` Cloudflare answered, recorded the moment it arrives;
3. **forgotten**: once its results and failures are in the run's journal and its hold is
   settled in the ledger.

So a run that starts finds each payload in one of two states: submitted (poll it, never
send its rows again) or only intended (it may or may not have reached Cloudflare: its hold
is counted as spent, and its rows are sent again; this is the one payload that can be sent
twice). Each batch also records the output's fingerprint: a batch made for other params or
another model is never collected into this output.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from pipelines.catalog.metering import Usage
from pipelines.core.errors import OutputError
from pipelines.tasks.base import Call, Estimate, TextItem

BOOK_FILE = "batches.sqlite3"
KEYS_AT_ONCE = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, model TEXT NOT NULL, hold TEXT NOT NULL,
    neurons REAL NOT NULL, items INTEGER NOT NULL, rows INTEGER NOT NULL,
    created REAL NOT NULL, run_id TEXT NOT NULL, request_id TEXT, submitted REAL
);
CREATE TABLE IF NOT EXISTS calls (
    batch TEXT NOT NULL, slot INTEGER NOT NULL, first INTEGER NOT NULL,
    bodies INTEGER NOT NULL, attempts INTEGER NOT NULL, call TEXT NOT NULL, rows BLOB NOT NULL,
    PRIMARY KEY (batch, slot)
);
CREATE TABLE IF NOT EXISTS flight (key TEXT NOT NULL, batch TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS flight_batch ON flight (batch);
CREATE INDEX IF NOT EXISTS flight_key ON flight (key);
"""


@dataclass(frozen=True)
class BookedBatch:
    """One payload: what it holds and where it stands."""

    id: str  # ours; its items' external references start with it
    fingerprint: str  # the output's, when the payload was made
    model: str
    hold: str  # the ledger hold of its worst case
    neurons: float  # held
    items: int  # requests in the payload
    rows: int  # output rows they answer
    created: float  # UTC epoch seconds of the intent
    run_id: str
    request_id: str | None = None  # None: not known to have reached Cloudflare
    submitted: float | None = None


@dataclass(frozen=True)
class Slot:
    """One call of a payload: its requests are ``first .. first + bodies - 1``."""

    call: Call
    first: int
    bodies: int
    attempts: int  # how many payloads carried these rows before (transient failures)


def _problem(path: Path, exc: sqlite3.Error | OSError) -> OutputError:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return OutputError(
        f"cannot use the batch book {path} ({reason}); it records the Batch API payloads in "
        "flight: make the output's folder writable (or free some space) and re-run"
    )


class BatchBook:
    """The batch book of one work folder; the file is made on the first write."""

    def __init__(self, work: Path, *, read_only: bool = False) -> None:
        self.path = work / BOOK_FILE
        self.read_only = read_only
        self._conn: sqlite3.Connection | None = None
        # one connection, used from the run's threads in turn (submitter and collector)
        self._lock = threading.RLock()

    def exists(self) -> bool:
        return self.path.is_file()

    def _db(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        try:
            if self.read_only:
                uri = self.path.resolve().as_uri() + "?mode=ro"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None)
            else:
                conn = sqlite3.connect(
                    self.path, timeout=30, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA journal_mode = TRUNCATE")
                conn.execute("PRAGMA synchronous = FULL")  # on the disk before returning
                conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise _problem(self.path, exc) from exc
        self._conn = conn
        return conn

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._db()
            yield from self._in_tx(conn)

    def _in_tx(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise _problem(self.path, exc) from exc

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        if not self.exists():
            return []
        try:
            with self._lock:
                return self._db().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise _problem(self.path, exc) from exc

    # -- writing ---------------------------------------------------------------------------

    def intend(self, batch: BookedBatch, slots: list[Slot]) -> None:
        """Record a payload before it is held or sent (step 1)."""
        with self._tx() as c:
            c.execute(
                "INSERT INTO batches (id, fingerprint, model, hold, neurons, items, rows, "
                "created, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    batch.id,
                    batch.fingerprint,
                    batch.model,
                    batch.hold,
                    batch.neurons,
                    batch.items,
                    batch.rows,
                    batch.created,
                    batch.run_id,
                ),
            )
            for n, slot in enumerate(slots):
                text, rows = encode_call(slot.call)
                c.execute(
                    "INSERT INTO calls VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (batch.id, n, slot.first, slot.bodies, slot.attempts, text, rows),
                )
                c.executemany(
                    "INSERT INTO flight (key, batch) VALUES (?, ?)",
                    ((key, batch.id) for key in slot.call.keys()),
                )

    def submitted(self, batch_id: str, request_id: str, at: float) -> None:
        """Record the request id Cloudflare gave the payload (step 2)."""
        with self._tx() as c:
            c.execute(
                "UPDATE batches SET request_id = ?, submitted = ? WHERE id = ?",
                (request_id, at, batch_id),
            )

    def rehold(self, batch_id: str, hold: str) -> None:
        """The payload's worst case is held anew under ``hold`` (a try that may have reached
        Cloudflare spent the first hold)."""
        with self._tx() as c:
            c.execute("UPDATE batches SET hold = ? WHERE id = ?", (hold, batch_id))

    def forget(self, batch_id: str) -> None:
        """The payload's outcome is kept, or it never left (step 3)."""
        with self._tx() as c:
            for table, column in (("flight", "batch"), ("calls", "batch"), ("batches", "id")):
                c.execute(f"DELETE FROM {table} WHERE {column} = ?", (batch_id,))

    # -- reading ---------------------------------------------------------------------------

    def batches(self) -> list[BookedBatch]:
        """Every payload in the book, oldest first."""
        rows = self._read(
            "SELECT id, fingerprint, model, hold, neurons, items, rows, created, run_id, "
            "request_id, submitted FROM batches ORDER BY created, id"
        )
        return [BookedBatch(*row) for row in rows]

    def slots(self, batch_id: str) -> list[Slot]:
        """The calls of one payload, in payload order."""
        rows = self._read(
            "SELECT first, bodies, attempts, call, rows FROM calls WHERE batch = ? ORDER BY slot",
            (batch_id,),
        )
        return [
            Slot(decode_call(text, blob), first, n, tries) for first, n, tries, text, blob in rows
        ]

    def keys(self, *, submitted_only: bool = False) -> Iterator[list[str]]:
        """The keys of every row in flight (``submitted_only``: in payloads whose request
        id is recorded; a run sends the others again), a chunk at a time."""
        if not self.exists():
            return
        only = (
            "AND batch IN (SELECT id FROM batches WHERE request_id IS NOT NULL)"
            if submitted_only
            else ""
        )
        after = ""  # keyset paging: the lock is never held across a yield
        while True:
            chunk = self._read(
                f"SELECT DISTINCT key FROM flight WHERE key > ? {only} ORDER BY key LIMIT ?",
                (after, KEYS_AT_ONCE),
            )
            if not chunk:
                return
            yield [str(k) for (k,) in chunk]
            after = str(chunk[-1][0])

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None

    def remove(self) -> None:
        """Delete the book (every payload in it was settled): what ``--fresh`` leaves."""
        self.close()
        for path in (self.path, self.path.with_name(BOOK_FILE + "-journal")):
            path.unlink(missing_ok=True)


# -- calls as bytes ------------------------------------------------------------------------


def encode_call(call: Call) -> tuple[str, bytes]:
    """A text call as JSON (items, rows' items, estimate) and its rows as Arrow IPC."""
    items = [[i.text, i.tokens, [list(o) for o in i.options]] for i in call.texts()]
    estimate = {"expected": asdict(call.estimate.expected), "worst": asdict(call.estimate.worst)}
    text = json.dumps(
        {"items": items, "item_of_row": list(call.item_of_row), "estimate": estimate},
        ensure_ascii=False,
    )
    sink = pa.BufferOutputStream()
    table = call.rows.to_arrow()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return text, sink.getvalue().to_pybytes()


def decode_call(text: str, blob: bytes) -> Call:
    """The call :func:`encode_call` wrote."""
    raw = json.loads(text)
    items = tuple(
        TextItem(str(t), int(n), tuple((str(k), v) for k, v in options))
        for t, n, options in raw["items"]
    )
    table = pa.ipc.open_stream(pa.py_buffer(blob)).read_all()
    rows = pl.from_arrow(table)
    assert isinstance(rows, pl.DataFrame)
    est = raw["estimate"]
    estimate = Estimate(Usage(**est["expected"]), Usage(**est["worst"]))
    return Call(items, rows, tuple(int(i) for i in raw["item_of_row"]), estimate)
