"""The ledger's SQLite file: its schema, opening it, transactions whose every SQLite error
is a one-line :class:`~pipelines.core.errors.StateError`, and noticing when the file was
deleted or replaced under a run.

The file is opened with a rollback journal and nothing memory-mapped
(:func:`~pipelines.core.sqlite.open_database` with ``wal=False``): a ledger made immutable,
or whose disk went read-only, while a run uses it then gives an error that stops the run
cleanly instead of a SIGBUS that kills it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pipelines.budget import clock
from pipelines.budget.holds import SCHEMA as HOLDS_SCHEMA
from pipelines.budget.records import DayUsage, format_neurons
from pipelines.core.errors import BudgetExhausted, BudgetStop, StateError
from pipelines.core.sqlite import database_problem, open_database

WHAT = "neuron ledger"
FORGETS = (
    " (a new one does not know what was spent today: `pipelines budget --sync` reads it "
    "back from the account)"
)
# The creation day of ledgers made before it was recorded: they count as old (known).
LEGACY_DAY = "0001-01-01"

SCHEMA_VERSION = 3  # 3: holds (batches in flight)
SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS reservations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL, day TEXT NOT NULL, job TEXT NOT NULL, model TEXT NOT NULL,
    neurons REAL NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL, created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_day ON reservations (account, day);
CREATE TABLE IF NOT EXISTS usage (
    account TEXT NOT NULL, day TEXT NOT NULL, job TEXT NOT NULL, model TEXT NOT NULL,
    neurons REAL NOT NULL, requests INTEGER NOT NULL,
    PRIMARY KEY (account, day, job, model)
);
CREATE TABLE IF NOT EXISTS external (
    account TEXT NOT NULL, day TEXT NOT NULL, model TEXT NOT NULL,
    neurons REAL NOT NULL, synced_at REAL NOT NULL,
    PRIMARY KEY (account, day, model)
);
CREATE TABLE IF NOT EXISTS days (
    account TEXT NOT NULL, day TEXT NOT NULL, cap REAL,
    exhausted_at REAL, note TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (account, day)
);
CREATE TABLE IF NOT EXISTS accounts (
    account TEXT PRIMARY KEY, last_day TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS known_days (
    account TEXT NOT NULL, day TEXT NOT NULL, how TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (account, day)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY, value TEXT NOT NULL
);
"""
    + HOLDS_SCHEMA
)


# Sums of float estimates must not refuse a request that lands exactly on the cap.
EPSILON = 1e-9


def count_usage(c: sqlite3.Connection, where: tuple[str, str, str, str], neurons: float) -> None:
    """Add one request's ``neurons`` to the usage of ``(account, day, job, model)``."""
    c.execute(
        "INSERT INTO usage (account, day, job, model, neurons, requests) "
        "VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (account, day, job, model) DO UPDATE "
        "SET neurons = usage.neurons + excluded.neurons, requests = usage.requests + 1",
        (*where, neurons),
    )


def refusal(usage: DayUsage, neurons: float, reserve: float, unit: str) -> BudgetExhausted:
    """Why the ledger refuses ``neurons`` on ``usage``'s day (``reserve`` kept aside)."""
    day = f"{usage.day} UTC"
    if usage.marked:
        return BudgetExhausted(
            f"Cloudflare reports the account's daily neurons used up on {day} ({usage.note})"
        )
    limit = usage.cap - reserve
    kept = f", {format_neurons(reserve)} kept in reserve" if reserve else ""
    if neurons > limit + EPSILON:
        # the runner splits a packed request before this: it is one input that is too big
        lower = " or lower budget.reserve" if reserve else ""
        return BudgetExhausted(
            f"one request needs {format_neurons(neurons)} {unit}, more than the daily "
            f"budget of {format_neurons(limit)} allows{kept}, so it can never be sent; raise "
            f"budget.daily_{unit}{lower}",
            reason=BudgetStop.CANNOT_FIT,
        )
    used = usage.committed + usage.reserved
    return BudgetExhausted(
        f"daily {unit.rstrip('s')} cap reached ({format_neurons(used)} / "
        f"{format_neurons(usage.cap)} "
        f"on {day}{kept}; the next request needs {format_neurons(neurons)})"
    )


def day_seen(c: sqlite3.Connection, account: str, now: str) -> str:
    """``now``, or the latest day this ledger has already counted ``account`` on if that is
    later: a clock set back across midnight must not open a second day's allowance."""
    row = c.execute("SELECT last_day FROM accounts WHERE account = ?", (account,)).fetchone()
    if row is not None and str(row[0]) >= now:  # ISO dates sort as text
        return str(row[0])
    c.execute(
        "INSERT INTO accounts (account, last_day) VALUES (?, ?) ON CONFLICT (account) "
        "DO UPDATE SET last_day = excluded.last_day",
        (account, now),
    )
    return now


def know_day(c: sqlite3.Connection, account: str, day: str, how: str) -> None:
    """Record that what ``account`` spent on ``day`` is known (``synced`` or ``assumed``)."""
    c.execute(
        "INSERT INTO known_days (account, day, how, at) VALUES (?, ?, ?, ?) ON CONFLICT "
        "(account, day) DO UPDATE SET how = excluded.how, at = excluded.at",
        (account, day, how, time.time()),
    )


def day_known(c: sqlite3.Connection, account: str, day: str) -> bool:
    """Whether :func:`know_day` was recorded for ``account`` and ``day``."""
    row = c.execute(
        "SELECT EXISTS (SELECT 1 FROM known_days WHERE account = ? AND day = ?)", (account, day)
    ).fetchone()
    return bool(row[0])


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class LedgerFile:
    """One connection to the ledger file, used by one thread at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)
        self._lock = threading.Lock()
        self._conn = open_database(
            path,
            schema=SCHEMA,
            version=SCHEMA_VERSION,
            what=WHAT,
            forgets=FORGETS,
            wal=False,
        )
        # what the path named when it was opened: a run must notice a file put in its place
        self._identity = _identity(path)
        self.created_day = self._creation_day()

    def _creation_day(self) -> str:
        with self.tx() as c:
            row = c.execute("SELECT value FROM meta WHERE key = 'created_day'").fetchone()
            if row is not None:
                return str(row[0])
            # A ledger from before creation days were kept, with records in it, is old.
            used = c.execute(
                "SELECT EXISTS (SELECT 1 FROM usage) OR EXISTS (SELECT 1 FROM days) "
                "OR EXISTS (SELECT 1 FROM reservations)"
            ).fetchone()[0]
            day = LEGACY_DAY if used else clock.utc_today()
            c.execute("INSERT INTO meta (key, value) VALUES ('created_day', ?)", (day,))
            return day

    # -- what differs from the PostgreSQL ledger (budget/pgstore.py) ----------------------

    def now(self, c: sqlite3.Connection) -> float:
        """This machine's clock: the file is only shared by its processes."""
        return time.time()

    def today(self, c: sqlite3.Connection) -> str:
        """This machine's UTC date."""
        return clock.utc_today()

    def insert_reservation(self, c: sqlite3.Connection, values: Sequence[object]) -> int:
        cur = c.execute(
            "INSERT INTO reservations (account, day, job, model, neurons, pid, host, "
            "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            tuple(values),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def release_dead(
        self, c: sqlite3.Connection, host: str, dead_pid: Callable[[int], bool]
    ) -> int:
        """Reservations of this machine's processes that are gone."""
        pids = [
            row[0]
            for row in c.execute("SELECT DISTINCT pid FROM reservations WHERE host = ?", (host,))
        ]
        removed = 0
        for pid in (p for p in pids if dead_pid(p)):
            cur = c.execute("DELETE FROM reservations WHERE host = ? AND pid = ?", (host, pid))
            removed += cur.rowcount
        return removed

    def moved(self) -> bool:
        """Whether the path no longer names the file this connection has open."""
        return self._identity is None or _identity(self.path) != self._identity

    def check_in_place(self) -> None:
        """Raise :class:`StateError` if the file was deleted or replaced since it was opened:
        what it recorded today is lost to every other run, so nothing more may be promised."""
        if self.moved():
            raise StateError(
                f"the {WHAT} {self.path} was deleted or replaced while this run was using it, "
                "so what it recorded today no longer counts and nothing more is sent; run "
                "`pipelines budget --sync` to read today's usage back from the account, then "
                "run again"
            )

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction; any SQLite error in it is a StateError."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise database_problem(self.path, WHAT, exc, FORGETS, opening=False) from exc

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()
