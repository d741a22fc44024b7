"""The neuron ledger: one SQLite file that every job and process of a machine shares, or
one PostgreSQL database that every machine on the account shares (``PIPELINES_LEDGER_URL``,
:mod:`pipelines.budget.pgstore`): the same statements and defences on both.

Neurons are reserved before a request is sent and settled after it, inside ``BEGIN
IMMEDIATE`` transactions, so concurrent processes can never together promise more than the
day's cap. Usage is keyed per Cloudflare account and UTC day, as Cloudflare counts it.

What would make it under-count is refused rather than trusted:

- The day an account counts on never goes back: a clock set back across midnight keeps the
  later day (and what it spent) until the real date catches up.
- A ledger file deleted or replaced under a run refuses the next reservation
  (:meth:`LedgerFile.check_in_place`): the run stops instead of spending again what the
  lost file recorded.
- A ledger made today does not know what the account spent before it existed:
  :meth:`Ledger.require_known_usage` (paid runs) refuses it until ``budget --sync`` read
  the day from the account or ``budget --assume-unused`` said nothing ran.
"""

from __future__ import annotations

import math
import os
import socket
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from pipelines.budget import clock, holds
from pipelines.budget.config import LEDGER_FILE, ledger_url
from pipelines.budget.holds import Hold
from pipelines.budget.pgstore import PgLedgerStore, is_database_url
from pipelines.budget.records import DayUsage, Reservation
from pipelines.budget.store import (
    EPSILON,
    WHAT,
    LedgerFile,
    count_usage,
    day_known,
    day_seen,
    know_day,
    refusal,
)
from pipelines.core.errors import BudgetExhausted, StateError
from pipelines.core.processes import pid_alive
from pipelines.core.secrets import redact_url
from pipelines.core.state import ensure_state_dir

__all__ = ["DayUsage", "Hold", "Ledger", "Reservation"]

T = TypeVar("T")

DEFAULT_DAILY_NEURONS = 10_000.0

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
        unit: str = "neurons",
        url: str | None = None,
    ) -> None:
        if daily_neurons <= 0 or reserve < 0:
            raise ValueError("daily_neurons must be > 0 and reserve >= 0")
        # an explicit file stays a file; otherwise the shared database when one is set
        url = url if url is not None else (ledger_url() if path is None else None)
        if url and not is_database_url(url):
            raise StateError(
                f"the ledger URL must start with postgresql://, not {redact_url(url)[:40]!r}"
            )
        self.url = url or None
        if self.url is None:
            self.path = path if path is not None else ensure_state_dir() / LEDGER_FILE
        self.account = account
        self.daily_neurons = float(daily_neurons)
        self.reserve_neurons = float(reserve)
        self._day_fn = day_fn
        # what the account's figures count (a model outside the catalog: tokens or requests)
        self.unit = unit
        self._host = socket.gethostname()
        # Settled ids of this instance: committing or releasing twice must not count twice.
        self._settled: set[int] = set()
        # A damaged ledger is an error, never replaced: it is what keeps runs under the cap.
        self._file: LedgerFile | PgLedgerStore
        if self.url is not None:
            self._file = PgLedgerStore(self.url)
            self.path = Path(self._file.where)  # shown in messages, never opened
        else:
            self._file = LedgerFile(self.path)

    @property
    def where(self) -> str:
        """The ledger's file, or its database URL without the password."""
        return self._file.where

    # -- plumbing ---------------------------------------------------------------------

    def _tx(self) -> AbstractContextManager[Any]:
        return self._file.tx()

    def _day(self, c: Any) -> str:
        """The account's day: the clock's (or ``day_fn``'s), never going back."""
        now = self._day_fn() if self._day_fn is not None else self._file.today(c)
        return day_seen(c, self.account, now)

    def _release_dead(self, c: Any) -> int:
        return self._file.release_dead(c, self._host, lambda pid: not pid_alive(pid))

    def _note_cap(self, c: Any, day: str) -> None:
        c.execute(
            "INSERT INTO days (account, day, cap) VALUES (?, ?, ?) "
            "ON CONFLICT (account, day) DO UPDATE SET cap = excluded.cap",
            (self.account, day, self.daily_neurons),
        )

    def _usage(self, c: Any, day: str, *, cap: float | None = None) -> DayUsage:
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
        ).fetchone()[0] + holds.held_sum(c, self.account, day, self._file.now(c))
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
            exhausted=marked or remaining <= EPSILON,
            resets_at=clock.reset_of(day),
            note=row[2] if marked else "",
            marked=marked,
        )

    def _grantable(self, usage: DayUsage) -> float:
        if usage.marked:
            return 0.0
        return max(0.0, usage.cap - self.reserve_neurons - usage.committed - usage.reserved)

    def _refusal(self, usage: DayUsage, neurons: float) -> BudgetExhausted:
        return refusal(usage, neurons, self.reserve_neurons, self.unit)

    # -- public API -------------------------------------------------------------------

    def _grant(self, neurons: float, record: Callable[[Any, str], T]) -> T:
        """Run ``record`` (which books ``neurons`` on the day it is given) if the day and the
        cap allow them, in the same transaction; else raise :class:`BudgetExhausted`."""
        if not math.isfinite(neurons) or neurons < 0:
            raise ValueError(f"a reservation needs a finite, non-negative figure, not {neurons}")
        self._file.check_in_place()
        refusal: BudgetExhausted | None = None
        with self._tx() as c:
            day = self._day(c)
            self._release_dead(c)
            self._note_cap(c, day)
            usage = self._usage(c, day, cap=self.daily_neurons)
            if usage.marked or neurons > self._grantable(usage) + EPSILON:
                refusal = self._refusal(usage, neurons)
            else:
                booked = record(c, day)
        # Raised after the transaction so the release of dead reservations is kept.
        if refusal is not None:
            raise refusal
        return booked

    def reserve(self, job: str, model: str, neurons: float) -> Reservation:
        """Promise ``neurons`` to one request, or raise :class:`BudgetExhausted`."""

        def record(c: Any, day: str) -> Reservation:
            # through the store: SQLite's rowid or PostgreSQL's RETURNING, and its clock
            now = self._file.now(c)
            rid = self._file.insert_reservation(
                c, (self.account, day, job, model, neurons, os.getpid(), self._host, now)
            )
            return Reservation(rid, self.account, day, job, model, float(neurons))

        return self._grant(neurons, record)

    def hold(self, key: str, job: str, model: str, neurons: float) -> Hold:
        """Promise ``neurons`` to a Batch API payload until :meth:`settle_hold` (see
        :mod:`pipelines.budget.holds`); raises :class:`BudgetExhausted` as :meth:`reserve`."""

        def record(c: sqlite3.Connection, day: str) -> Hold:
            held = Hold(key, self.account, day, job, model, float(neurons), time.time())
            holds.insert(c, held)
            return held

        return self._grant(neurons, record)

    def settle_hold(self, key: str, actual_neurons: float | None) -> bool:
        """Settle the hold ``key``: count ``actual_neurons`` (``None``: it was never billed)
        on the later of its day and today. False when it was not open (settled before, or
        not made in this ledger): then nothing is counted."""
        if actual_neurons is not None and (not math.isfinite(actual_neurons) or actual_neurons < 0):
            raise ValueError(f"actual neurons must be finite and non-negative: {actual_neurons}")
        with self._tx() as c:
            held = holds.take(c, key, actual_neurons)
            if held is None:
                return False
            if actual_neurons:
                today = self._day(c) if held.account == self.account else held.day
                day = max(held.day, today)
                count_usage(c, (held.account, day, held.job, held.model), actual_neurons)
            return True

    def open_holds(self, prefix: str = "") -> list[Hold]:
        """The holds not settled yet whose key starts with ``prefix``, oldest first."""
        with self._tx() as c:
            return holds.open_holds(c, prefix)

    def available(self) -> float:
        """What :meth:`reserve` would still grant right now."""
        self._file.check_in_place()
        with self._tx() as c:
            self._release_dead(c)
            return self._grantable(self._usage(c, self._day(c), cap=self.daily_neurons))

    def commit(self, r: Reservation, actual_neurons: float) -> None:
        """Replace the reservation by what the request really cost (above or below)."""
        if not math.isfinite(actual_neurons) or actual_neurons < 0:
            raise ValueError(f"actual neurons must be finite and non-negative: {actual_neurons}")
        if r.id in self._settled:
            return
        if self._file.moved():  # nobody reads the lost file; the next reserve stops the run
            self._settled.add(r.id)
            return
        with self._tx() as c:
            # Counted even if the reservation was swept as stale: the request was billed.
            c.execute("DELETE FROM reservations WHERE id = ?", (r.id,))
            count_usage(c, (r.account, r.day, r.job, r.model), float(actual_neurons))
        self._settled.add(r.id)

    def release(self, r: Reservation) -> None:
        """Give the reservation back: the request was not billed."""
        if r.id in self._settled:
            return
        if self._file.moved():
            self._settled.add(r.id)
            return
        with self._tx() as c:
            c.execute("DELETE FROM reservations WHERE id = ?", (r.id,))
        self._settled.add(r.id)

    def mark_exhausted(self, note: str = "") -> None:
        """Cloudflare answered 3036/4006: nothing more for this account today."""
        with self._tx() as c:
            c.execute(
                "INSERT INTO days (account, day, exhausted_at, note) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (account, day) DO UPDATE SET exhausted_at = excluded.exhausted_at, "
                "note = excluded.note",
                (self.account, self._day(c), self._file.now(c), note or "daily allocation used up"),
            )

    def clear_exhausted(self) -> bool:
        """Lift today's 3036/4006 mark (the account shows room after all); False if none."""
        with self._tx() as c:
            cur = c.execute(
                "UPDATE days SET exhausted_at = NULL, note = '' "
                "WHERE account = ? AND day = ? AND exhausted_at IS NOT NULL",
                (self.account, self._day(c)),
            )
            return int(cur.rowcount or 0) > 0

    def record_external(
        self, neurons_by_model: dict[str, float], *, day: str | None = None
    ) -> None:
        """Store the account's own figures for the day (its analytics), replacing older ones;
        the day's usage is then known."""
        with self._tx() as c:
            now = self._file.now(c)
            day = day or self._day(c)
            c.execute("DELETE FROM external WHERE account = ? AND day = ?", (self.account, day))
            c.executemany(
                "INSERT INTO external (account, day, model, neurons, synced_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [(self.account, day, m, float(n), now) for m, n in neurons_by_model.items()],
            )
            know_day(c, self.account, day, "synced")

    def assume_unused(self) -> None:
        """Take it that the account used nothing today besides what this ledger recorded."""
        with self._tx() as c:
            know_day(c, self.account, self._day(c), "assumed")

    def usage_known(self) -> bool:
        """Whether every neuron the account spent today is in this ledger: it existed before
        the day began, or the day was synced from the account or assumed unused."""
        with self._tx() as c:
            day = self._day(c)
            return self._file.created_day < day or day_known(c, self.account, day)

    def require_known_usage(self) -> None:
        """Raise :class:`StateError` unless :meth:`usage_known` (before a paid run)."""
        if not self.usage_known():
            raise StateError(
                f"the {WHAT} {self.where} was made today, so it does not know what account "
                f"{self.account} spent earlier today; run `pipelines budget --sync` to read it "
                "from the account, or `pipelines budget --assume-unused` if nothing ran on it "
                "today, then run again"
            )

    def today(self) -> DayUsage:
        """The current day (as ``day_fn`` sees it, never going back) under this ledger's cap."""
        with self._tx() as c:
            self._release_dead(c)
            return self._usage(c, self._day(c), cap=self.daily_neurons)

    def by_job_model(self, day: str | None = None) -> list[dict[str, Any]]:
        """Rows ``job, model, committed, reserved, requests`` for ``day`` (default today)."""
        rows: dict[tuple[str, str], dict[str, Any]] = {}

        def row(job: str, model: str) -> dict[str, Any]:
            return rows.setdefault(
                (job, model),
                {"job": job, "model": model, "committed": 0.0, "reserved": 0.0, "requests": 0},
            )

        with self._tx() as c:
            self._release_dead(c)
            day = day or self._day(c)
            args = (self.account, day)
            for job, model, neurons, requests in c.execute(
                "SELECT job, model, neurons, requests FROM usage WHERE account = ? AND day = ?",
                args,
            ):
                r = row(job, model)
                r["committed"] += neurons
                r["requests"] += requests
            for job, model, neurons in [
                *c.execute(
                    "SELECT job, model, SUM(neurons) FROM reservations "
                    "WHERE account = ? AND day = ? GROUP BY job, model",
                    args,
                ),
                *holds.held_by_job_model(c, self.account, day, time.time()),
            ]:
                row(job, model)["reserved"] += neurons
            theirs = c.execute(
                "SELECT model, neurons FROM external WHERE account = ? AND day = ?", args
            ).fetchall()
        for model, neurons in theirs:
            ours = sum(r["committed"] for (_, m), r in rows.items() if m == model)
            if neurons > ours + EPSILON:
                row(EXTERNAL_JOB, model)["committed"] = neurons - ours
        return sorted(rows.values(), key=lambda r: (r["job"], r["model"]))

    def history(self, days: int = 14) -> list[DayUsage]:
        """The last ``days`` days up to today, oldest first; days without use show zero."""
        out: list[DayUsage] = []
        with self._tx() as c:
            self._release_dead(c)
            today = self._day(c)
            for back in range(days - 1, -1, -1):
                day = clock.shift_day(today, -back)
                out.append(self._usage(c, day, cap=self.daily_neurons if back == 0 else None))
        return out

    def recover_stale(self, max_age_s: float = 3600) -> int:
        """Release reservations of dead processes or older than ``max_age_s``; how many."""
        with self._tx() as c:
            cutoff = self._file.now(c) - max_age_s
            removed = self._release_dead(c)
            cur = c.execute("DELETE FROM reservations WHERE created < ?", (cutoff,))
            return removed + int(cur.rowcount or 0)

    def close(self) -> None:
        """Close the database connection."""
        self._file.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
