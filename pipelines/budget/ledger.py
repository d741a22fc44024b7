"""The neuron ledger: one SQLite file that every job and process of a machine shares.

Neurons are reserved before a request is sent and settled after it, inside ``BEGIN
IMMEDIATE`` transactions, so concurrent processes can never together promise more than the
day's cap. Usage is keyed per Cloudflare account and UTC day, as Cloudflare counts it.
"""

from __future__ import annotations

import math
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from pipelines.budget import clock
from pipelines.budget.config import LEDGER_FILE
from pipelines.budget.records import DayUsage, Reservation, format_neurons
from pipelines.core.errors import BudgetExhausted, BudgetStop
from pipelines.core.processes import pid_alive
from pipelines.core.sqlite import open_database
from pipelines.core.state import ensure_state_dir

__all__ = ["DayUsage", "Ledger", "Reservation"]

DEFAULT_DAILY_NEURONS = 10_000.0
# Sums of float estimates must not refuse a request that lands exactly on the cap.
_EPSILON = 1e-9

_SCHEMA = """
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
"""

# Usage the account's analytics reported beyond ours shows up under this job name.
EXTERNAL_JOB = "(outside pipelines)"


class Ledger:
    """Reserve, commit and release neurons against a daily cap shared by processes."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        account: str = "default",
        daily_neurons: float = DEFAULT_DAILY_NEURONS,
        reserve: float = 0,
        day_fn: Callable[[], str] | None = None,
    ) -> None:
        if daily_neurons <= 0 or reserve < 0:
            raise ValueError("daily_neurons must be > 0 and reserve >= 0")
        self.path = path if path is not None else ensure_state_dir() / LEDGER_FILE
        self.account = account
        self.daily_neurons = float(daily_neurons)
        self.reserve_neurons = float(reserve)
        self._day_fn = day_fn
        self._host = socket.gethostname()
        # Settled ids of this instance: committing or releasing twice must not count twice.
        self._settled: set[int] = set()
        self._lock = threading.Lock()
        # A damaged ledger is an error, never replaced: it is what keeps runs under the cap.
        self._conn = open_database(
            self.path,
            schema=_SCHEMA,
            what="neuron ledger",
            forgets=" (a new one does not know what was spent today: `pipelines budget "
            "--sync` reads it back from the account)",
        )

    # -- plumbing ---------------------------------------------------------------------

    def _day(self) -> str:
        return self._day_fn() if self._day_fn is not None else clock.utc_today()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _release_dead(self, c: sqlite3.Connection) -> int:
        pids = [
            row[0]
            for row in c.execute(
                "SELECT DISTINCT pid FROM reservations WHERE host = ?", (self._host,)
            )
        ]
        dead = [pid for pid in pids if not pid_alive(pid)]
        removed = 0
        for pid in dead:
            cur = c.execute(
                "DELETE FROM reservations WHERE host = ? AND pid = ?", (self._host, pid)
            )
            removed += cur.rowcount
        return removed

    def _note_cap(self, c: sqlite3.Connection, day: str) -> None:
        c.execute(
            "INSERT INTO days (account, day, cap) VALUES (?, ?, ?) "
            "ON CONFLICT (account, day) DO UPDATE SET cap = excluded.cap",
            (self.account, day, self.daily_neurons),
        )

    def _usage(self, c: sqlite3.Connection, day: str, *, cap: float | None = None) -> DayUsage:
        ours = dict(
            c.execute(
                "SELECT model, SUM(neurons) FROM usage WHERE account = ? AND day = ? "
                "GROUP BY model",
                (self.account, day),
            ).fetchall()
        )
        theirs = dict(
            c.execute(
                "SELECT model, neurons FROM external WHERE account = ? AND day = ?",
                (self.account, day),
            ).fetchall()
        )
        # The account's analytics include our own requests but may lag behind them.
        committed = float(sum(max(ours.get(m, 0.0), theirs.get(m, 0.0)) for m in {*ours, *theirs}))
        reserved = c.execute(
            "SELECT COALESCE(SUM(neurons), 0) FROM reservations WHERE account = ? AND day = ?",
            (self.account, day),
        ).fetchone()[0]
        row = c.execute(
            "SELECT cap, exhausted_at, note FROM days WHERE account = ? AND day = ?",
            (self.account, day),
        ).fetchone()
        if cap is None:
            cap = float(row[0]) if row is not None and row[0] is not None else self.daily_neurons
        marked = row is not None and row[1] is not None
        remaining = max(0.0, cap - committed - reserved)
        return DayUsage(
            account=self.account,
            day=day,
            cap=cap,
            committed=committed,
            reserved=float(reserved),
            remaining=remaining,
            exhausted=marked or remaining <= _EPSILON,
            resets_at=clock.reset_of(day),
            note=row[2] if marked else "",
            marked=marked,
        )

    def _grantable(self, usage: DayUsage) -> float:
        if usage.marked:
            return 0.0
        return max(0.0, usage.cap - self.reserve_neurons - usage.committed - usage.reserved)

    def _refusal(self, usage: DayUsage, neurons: float) -> BudgetExhausted:
        day = f"{usage.day} UTC"
        if usage.marked:
            return BudgetExhausted(
                f"Cloudflare reports the account's daily neurons used up on {day} ({usage.note})"
            )
        limit = usage.cap - self.reserve_neurons
        kept = (
            f", {format_neurons(self.reserve_neurons)} kept in reserve"
            if self.reserve_neurons
            else ""
        )
        if neurons > limit + _EPSILON:
            return BudgetExhausted(
                f"one request needs {format_neurons(neurons)} neurons, more than the daily budget "
                f"of {format_neurons(limit)} allows{kept}; lower the batch size or raise the cap",
                reason=BudgetStop.CANNOT_FIT,
            )
        used = usage.committed + usage.reserved
        return BudgetExhausted(
            f"daily neuron cap reached ({format_neurons(used)} / {format_neurons(usage.cap)} "
            f"on {day}{kept}; the next request needs {format_neurons(neurons)})"
        )

    # -- public API -------------------------------------------------------------------

    def reserve(self, job: str, model: str, neurons: float) -> Reservation:
        """Promise ``neurons`` to one request, or raise :class:`BudgetExhausted`."""
        if not math.isfinite(neurons) or neurons < 0:
            raise ValueError(f"a reservation needs a finite, non-negative figure, not {neurons}")
        day = self._day()
        refusal: BudgetExhausted | None = None
        rid: int | None = None
        with self._tx() as c:
            self._release_dead(c)
            self._note_cap(c, day)
            usage = self._usage(c, day, cap=self.daily_neurons)
            if usage.marked or neurons > self._grantable(usage) + _EPSILON:
                refusal = self._refusal(usage, neurons)
            else:
                cur = c.execute(
                    "INSERT INTO reservations (account, day, job, model, neurons, pid, host, "
                    "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (self.account, day, job, model, neurons, os.getpid(), self._host, time.time()),
                )
                rid = cur.lastrowid
        # Raised after the transaction so the release of dead reservations is kept.
        if refusal is not None:
            raise refusal
        assert rid is not None
        return Reservation(rid, self.account, day, job, model, float(neurons))

    def available(self) -> float:
        """What :meth:`reserve` would still grant right now."""
        day = self._day()
        with self._tx() as c:
            self._release_dead(c)
            return self._grantable(self._usage(c, day, cap=self.daily_neurons))

    def commit(self, r: Reservation, actual_neurons: float) -> None:
        """Replace the reservation by what the request really cost (above or below)."""
        if not math.isfinite(actual_neurons) or actual_neurons < 0:
            raise ValueError(f"actual neurons must be finite and non-negative: {actual_neurons}")
        if r.id in self._settled:
            return
        with self._tx() as c:
            # Counted even if the reservation was swept as stale: the request was billed.
            c.execute("DELETE FROM reservations WHERE id = ?", (r.id,))
            c.execute(
                "INSERT INTO usage (account, day, job, model, neurons, requests) "
                "VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (account, day, job, model) DO UPDATE "
                "SET neurons = neurons + excluded.neurons, requests = requests + 1",
                (r.account, r.day, r.job, r.model, float(actual_neurons)),
            )
        self._settled.add(r.id)

    def release(self, r: Reservation) -> None:
        """Give the reservation back: the request was not billed."""
        if r.id in self._settled:
            return
        with self._tx() as c:
            c.execute("DELETE FROM reservations WHERE id = ?", (r.id,))
        self._settled.add(r.id)

    def mark_exhausted(self, note: str = "") -> None:
        """Cloudflare answered 3036/4006: nothing more for this account today."""
        day = self._day()
        with self._tx() as c:
            c.execute(
                "INSERT INTO days (account, day, exhausted_at, note) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (account, day) DO UPDATE SET exhausted_at = excluded.exhausted_at, "
                "note = excluded.note",
                (self.account, day, time.time(), note or "daily allocation used up"),
            )

    def record_external(
        self, neurons_by_model: dict[str, float], *, day: str | None = None
    ) -> None:
        """Store the account's own figures for the day (its analytics), replacing older ones."""
        day = day or self._day()
        now = time.time()
        with self._tx() as c:
            c.execute("DELETE FROM external WHERE account = ? AND day = ?", (self.account, day))
            c.executemany(
                "INSERT INTO external (account, day, model, neurons, synced_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [(self.account, day, m, float(n), now) for m, n in neurons_by_model.items()],
            )

    def today(self) -> DayUsage:
        """The current day (as ``day_fn`` sees it) under this ledger's cap."""
        day = self._day()
        with self._tx() as c:
            self._release_dead(c)
            return self._usage(c, day, cap=self.daily_neurons)

    def by_job_model(self, day: str | None = None) -> list[dict[str, Any]]:
        """Rows ``job, model, committed, reserved, requests`` for ``day`` (default today)."""
        day = day or self._day()
        rows: dict[tuple[str, str], dict[str, Any]] = {}

        def row(job: str, model: str) -> dict[str, Any]:
            return rows.setdefault(
                (job, model),
                {"job": job, "model": model, "committed": 0.0, "reserved": 0.0, "requests": 0},
            )

        with self._tx() as c:
            self._release_dead(c)
            args = (self.account, day)
            for job, model, neurons, requests in c.execute(
                "SELECT job, model, neurons, requests FROM usage WHERE account = ? AND day = ?",
                args,
            ):
                r = row(job, model)
                r["committed"] += neurons
                r["requests"] += requests
            for job, model, neurons in c.execute(
                "SELECT job, model, SUM(neurons) FROM reservations "
                "WHERE account = ? AND day = ? GROUP BY job, model",
                args,
            ):
                row(job, model)["reserved"] += neurons
            theirs = c.execute(
                "SELECT model, neurons FROM external WHERE account = ? AND day = ?", args
            ).fetchall()
        for model, neurons in theirs:
            ours = sum(r["committed"] for (_, m), r in rows.items() if m == model)
            if neurons > ours + _EPSILON:
                row(EXTERNAL_JOB, model)["committed"] = neurons - ours
        return sorted(rows.values(), key=lambda r: (r["job"], r["model"]))

    def history(self, days: int = 14) -> list[DayUsage]:
        """The last ``days`` days up to today, oldest first; days without use show zero."""
        today = self._day()
        out: list[DayUsage] = []
        with self._tx() as c:
            self._release_dead(c)
            for back in range(days - 1, -1, -1):
                day = clock.shift_day(today, -back)
                out.append(self._usage(c, day, cap=self.daily_neurons if back == 0 else None))
        return out

    def recover_stale(self, max_age_s: float = 3600) -> int:
        """Release reservations of dead processes or older than ``max_age_s``; how many."""
        cutoff = time.time() - max_age_s
        with self._tx() as c:
            removed = self._release_dead(c)
            cur = c.execute("DELETE FROM reservations WHERE created < ?", (cutoff,))
            return removed + cur.rowcount

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
