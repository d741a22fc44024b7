"""Held reservations: the worst case of a Batch API payload, from its submission until its
results are collected, across runs, processes and days.

An ordinary reservation belongs to a live process and is swept when that process dies
(:meth:`~pipelines.budget.ledger.Ledger.reserve`). A submitted batch outlives the process
that submitted it: Cloudflare runs and bills it whether or not anybody is polling, so its
neurons must stay promised until a later run collects it. Holds live in a table of their own
that nothing sweeps:

- An open hold counts as reserved on the day it was made and on every later day until it is
  settled: whether Cloudflare bills a batch when it is queued or when it runs is not
  documented, so it counts on whichever day is fuller, never on neither.
- Settling (:func:`settle`) is idempotent: the hold is marked settled, not deleted, so a run
  that crashed after settling and collects the batch again counts nothing twice. What it
  cost is counted on the later of its day and the settling day.
- A hold nobody settles (its output deleted while the batch was in flight) stops counting
  :data:`HOLD_EXPIRES_S` after it was made; settled holds are forgotten after
  :data:`FORGET_SETTLED_S`.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

# Cloudflare documents no retention or turnaround for batches; three days is far beyond
# what a batch takes, and bounds what a forgotten hold can keep from later days.
HOLD_EXPIRES_S = 3 * 86_400
FORGET_SETTLED_S = 30 * 86_400

SCHEMA = """
CREATE TABLE IF NOT EXISTS holds (
    key TEXT PRIMARY KEY,
    account TEXT NOT NULL, day TEXT NOT NULL, job TEXT NOT NULL, model TEXT NOT NULL,
    neurons REAL NOT NULL, created REAL NOT NULL,
    settled REAL, actual REAL
);
CREATE INDEX IF NOT EXISTS holds_open ON holds (account, settled);
"""


@dataclass(frozen=True)
class Hold:
    """Neurons held for one submitted batch until it is collected."""

    key: str
    account: str
    day: str
    job: str
    model: str
    neurons: float
    created: float


def _live(now: float) -> float:
    return now - HOLD_EXPIRES_S


def held_sum(c: sqlite3.Connection, account: str, day: str, now: float) -> float:
    """Neurons held open on ``day`` for ``account`` (holds made that day or before)."""
    row = c.execute(
        "SELECT COALESCE(SUM(neurons), 0) FROM holds WHERE account = ? AND settled IS NULL "
        "AND day <= ? AND created >= ?",
        (account, day, _live(now)),
    ).fetchone()
    return float(row[0])


def held_by_job_model(
    c: sqlite3.Connection, account: str, day: str, now: float
) -> list[tuple[str, str, float]]:
    """``(job, model, neurons)`` held open on ``day``."""
    rows = c.execute(
        "SELECT job, model, SUM(neurons) FROM holds WHERE account = ? AND settled IS NULL "
        "AND day <= ? AND created >= ? GROUP BY job, model",
        (account, day, _live(now)),
    ).fetchall()
    return [(str(j), str(m), float(n)) for j, m, n in rows]


def insert(c: sqlite3.Connection, hold: Hold) -> None:
    """Record ``hold`` (a key already used is an error: keys are made unique)."""
    c.execute(
        "DELETE FROM holds WHERE settled IS NOT NULL AND settled < ?",
        (hold.created - FORGET_SETTLED_S,),
    )
    c.execute(
        "INSERT INTO holds (key, account, day, job, model, neurons, created) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            hold.key,
            hold.account,
            hold.day,
            hold.job,
            hold.model,
            hold.neurons,
            hold.created,
        ),
    )


def take(c: sqlite3.Connection, key: str, actual: float | None) -> Hold | None:
    """Mark the hold ``key`` settled; the hold when it was open, else None (settled before,
    or never made in this ledger)."""
    row = c.execute(
        "SELECT key, account, day, job, model, neurons, created FROM holds "
        "WHERE key = ? AND settled IS NULL",
        (key,),
    ).fetchone()
    if row is None:
        return None
    c.execute("UPDATE holds SET settled = ?, actual = ? WHERE key = ?", (time.time(), actual, key))
    return Hold(str(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]), *row[5:7])


def open_holds(c: sqlite3.Connection, prefix: str) -> list[Hold]:
    """Every open hold whose key starts with ``prefix``, oldest first."""
    rows = c.execute(
        "SELECT key, account, day, job, model, neurons, created FROM holds "
        "WHERE settled IS NULL AND substr(key, 1, ?) = ? ORDER BY created",
        (len(prefix), prefix),
    ).fetchall()
    return [Hold(str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), *r[5:7]) for r in rows]
