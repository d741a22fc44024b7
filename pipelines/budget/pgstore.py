"""The ledger in PostgreSQL (``PIPELINES_LEDGER_URL=postgresql://...``): the same tables and
the same statements as the SQLite file, shared by every machine that runs on one account.

Every transaction first takes one advisory lock, so ledger transactions run one after the
other exactly as SQLite's ``BEGIN IMMEDIATE`` makes them: no two workers can together
promise more than the day's cap. Times (reservation ages, exhaustion marks, the default UTC
day) come from the database's clock, so machines whose clocks disagree still agree on them.

A worker that dies holds reservations nobody will settle: its database session ends with
it, so a reservation whose session is gone from ``pg_stat_activity`` is released, whichever
machine it ran on. A ledger whose tables were dropped (and maybe made again) under a run is
noticed by its ``ledger_id`` and refuses the next reservation, as a deleted ledger file
does. Every database error is one :class:`StateError` line whose URL has its
password masked; a database that cannot be reached is such an error before anything is
sent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pipelines.core.errors import StateError
from pipelines.core.secrets import mask, redact_url, url_password

WHAT = "neuron ledger"
# One lock for every ledger transaction of a database (any constant; "pipe" in ASCII).
LEDGER_LOCK = 0x70697065
CONNECT_TIMEOUT_S = 5

SCHEMA = """
CREATE TABLE IF NOT EXISTS reservations (
    id BIGSERIAL PRIMARY KEY,
    account TEXT NOT NULL, day TEXT NOT NULL, job TEXT NOT NULL, model TEXT NOT NULL,
    neurons DOUBLE PRECISION NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL, session INTEGER
);
CREATE INDEX IF NOT EXISTS reservations_day ON reservations (account, day);
CREATE TABLE IF NOT EXISTS usage (
    account TEXT NOT NULL, day TEXT NOT NULL, job TEXT NOT NULL, model TEXT NOT NULL,
    neurons DOUBLE PRECISION NOT NULL, requests BIGINT NOT NULL,
    PRIMARY KEY (account, day, job, model)
);
CREATE TABLE IF NOT EXISTS external (
    account TEXT NOT NULL, day TEXT NOT NULL, model TEXT NOT NULL,
    neurons DOUBLE PRECISION NOT NULL, synced_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (account, day, model)
);
CREATE TABLE IF NOT EXISTS days (
    account TEXT NOT NULL, day TEXT NOT NULL, cap DOUBLE PRECISION,
    exhausted_at DOUBLE PRECISION, note TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (account, day)
);
CREATE TABLE IF NOT EXISTS accounts (account TEXT PRIMARY KEY, last_day TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS known_days (
    account TEXT NOT NULL, day TEXT NOT NULL, how TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (account, day)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS holds (
    key TEXT PRIMARY KEY,
    account TEXT NOT NULL, day TEXT NOT NULL, job TEXT NOT NULL, model TEXT NOT NULL,
    neurons DOUBLE PRECISION NOT NULL, created DOUBLE PRECISION NOT NULL,
    settled DOUBLE PRECISION, actual DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS holds_open ON holds (account, settled);
CREATE TABLE IF NOT EXISTS rate_slots (
    account TEXT NOT NULL, model TEXT NOT NULL,
    next_slot DOUBLE PRECISION NOT NULL, pause_until DOUBLE PRECISION NOT NULL,
    rpm DOUBLE PRECISION NOT NULL, penalties BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (account, model)
);
"""

NOW_SQL = "SELECT extract(epoch FROM clock_timestamp())::double precision"
TODAY_SQL = "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


def is_database_url(text: str | None) -> bool:
    """Whether ``text`` names a PostgreSQL database rather than a file."""
    return bool(text) and str(text).startswith(("postgresql://", "postgres://"))


def database_problem(url: str, exc: BaseException, doing: str) -> StateError:
    """One line, password masked, for an error of the database at ``url``."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    text = f"the {WHAT} database {redact_url(url)} {doing}: {first}"
    password = url_password(url)
    return StateError(mask(text, [password]) if password else text)


class PgConn:
    """A psycopg connection that takes the ledger's ``?`` placeholders."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(sql.replace("?", "%s"), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(sql.replace("?", "%s"), [tuple(r) for r in rows])


class PgLedgerStore:
    """One connection to the shared ledger database, used by one thread at a time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = redact_url(url)
        self._lock = threading.Lock()
        self._conn: Any = None
        self._connect()
        with self.tx() as c:
            c.execute(
                "INSERT INTO meta (key, value) VALUES ('created_day', ?) "
                "ON CONFLICT (key) DO NOTHING",
                (self.today(c),),
            )
            self.created_day = str(
                c.execute("SELECT value FROM meta WHERE key = 'created_day'").fetchone()[0]
            )
            # which ledger this is: one dropped and made again under a run is another
            c.execute(
                "INSERT INTO meta (key, value) VALUES ('ledger_id', md5(random()::text)) "
                "ON CONFLICT (key) DO NOTHING"
            )
            self._identity = self._ledger_id(c)

    def problem(self, exc: BaseException, doing: str) -> StateError:
        """One line, password masked, for a database error."""
        return database_problem(self.url, exc, doing)

    def _connect(self) -> None:
        try:
            import psycopg
        except ImportError:
            raise StateError(
                f"the {WHAT} database {self.where} needs psycopg: pip install 'pipelines[postgres]'"
            ) from None

        try:
            conn = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_S,
                application_name="pipelines",
                # a worker on another machine that vanishes must lose its session soon
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
            )
        except (psycopg.Error, ValueError) as exc:
            raise self.problem(exc, "cannot be reached") from None
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (LEDGER_LOCK,))
                conn.execute(SCHEMA)
        except psycopg.Error as exc:
            conn.close()
            raise self.problem(exc, "cannot be set up") from None
        self._conn = conn

    @contextmanager
    def tx(self) -> Iterator[PgConn]:
        """One ledger transaction, after every other (the advisory lock); errors are
        StateErrors."""
        import psycopg

        with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._connect()
            try:
                with self._conn.transaction():
                    self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (LEDGER_LOCK,))
                    yield PgConn(self._conn)
            except psycopg.Error as exc:
                raise self.problem(exc, "failed") from None

    # -- what differs from the SQLite file ------------------------------------------------

    def now(self, c: PgConn) -> float:
        """The database's clock, in seconds since the epoch."""
        return float(c.execute(NOW_SQL).fetchone()[0])

    def today(self, c: PgConn) -> str:
        """The database's UTC date."""
        return str(c.execute(TODAY_SQL).fetchone()[0])

    def insert_reservation(self, c: PgConn, values: Sequence[Any]) -> int:
        row = c.execute(
            "INSERT INTO reservations (account, day, job, model, neurons, pid, host, created, "
            "session) VALUES (?, ?, ?, ?, ?, ?, ?, ?, pg_backend_pid()) RETURNING id",
            values,
        ).fetchone()
        return int(row[0])

    def release_dead(self, c: PgConn, host: str, dead_pid: Callable[[int], bool]) -> int:
        """Reservations of sessions that ended (their worker died, on any machine), and of
        this machine's processes that are gone (known at once, before the server notices
        the closed connection)."""
        cur = c.execute(
            "DELETE FROM reservations WHERE session IS NOT NULL AND session NOT IN "
            "(SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL)"
        )
        removed = int(cur.rowcount or 0)
        pids = [
            row[0]
            for row in c.execute("SELECT DISTINCT pid FROM reservations WHERE host = ?", (host,))
        ]
        for pid in (p for p in pids if dead_pid(p)):
            cur = c.execute("DELETE FROM reservations WHERE host = ? AND pid = ?", (host, pid))
            removed += int(cur.rowcount or 0)
        return removed

    @staticmethod
    def _ledger_id(c: PgConn) -> str | None:
        row = c.execute("SELECT value FROM meta WHERE key = 'ledger_id'").fetchone()
        return str(row[0]) if row is not None else None

    def moved(self) -> bool:
        """Whether the database's ledger is no longer the one opened (its tables dropped
        and made again: what it recorded today is lost)."""
        with self.tx() as c:
            if c.execute("SELECT to_regclass('meta') IS NULL").fetchone()[0]:
                return True  # the tables are gone
            return self._ledger_id(c) != self._identity

    def check_in_place(self) -> None:
        """Raise :class:`StateError` if the ledger was dropped or replaced since it was
        opened, as :meth:`LedgerFile.check_in_place` does for a file."""
        if self.moved():
            raise StateError(
                f"the {WHAT} in {self.where} was dropped or replaced while this run was using "
                "it, so what it recorded today no longer counts and nothing more is sent; run "
                "`pipelines budget --sync` to read today's usage back from the account, then "
                "run again"
            )

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
