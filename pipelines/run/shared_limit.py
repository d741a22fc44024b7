"""The per-model rate limiter shared by every machine on an account, through the ledger's
PostgreSQL database (issue 17).

The slots are the same evenly spaced send slots as :class:`~pipelines.run.ratelimit.RateLimiter`
but they live in one row per (account, model) of ``rate_slots``: taking a slot is one
``UPDATE ... RETURNING`` that moves the row's next slot on by one interval, so workers on
different machines together stay at or under the rate. Every time is the database's clock
(``clock_timestamp()``): a machine only ever sleeps for a *duration* the database computed,
so machines whose clocks disagree still share one timeline. A 3021 anywhere writes a pause
and a lower rate into the row, and every worker's next slot comes after it.

The connection is asynchronous (psycopg's ``AsyncConnection``): nothing blocks the event
loop. A database error is a :class:`StateError`: the run stops sending.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

from pipelines.budget.pgstore import CONNECT_TIMEOUT_S, NOW_SQL, database_problem
from pipelines.core.errors import StateError
from pipelines.run.ratelimit import MARGIN, MAX_PAUSE_S, MIN_FRACTION

# A slot that moves the row on by one interval; the slot is the value before the move.
_TAKE = f"""
WITH t AS ({NOW_SQL} AS now)
UPDATE rate_slots r SET next_slot = GREATEST(r.next_slot, r.pause_until, t.now) + 60.0 / r.rpm
FROM t WHERE r.account = %s AND r.model = %s
RETURNING r.next_slot - 60.0 / r.rpm, t.now, r.pause_until
"""
_CHECK = "SELECT pause_until FROM rate_slots WHERE account = %s AND model = %s"
_PENALIZE = f"""
WITH t AS ({NOW_SQL} AS now)
UPDATE rate_slots r SET penalties = r.penalties + 1,
    rpm = GREATEST(%s, r.rpm * 0.8),
    pause_until = GREATEST(r.pause_until, t.now + LEAST(%s, COALESCE(%s, 240.0 / r.rpm))),
    next_slot = GREATEST(r.next_slot,
                         GREATEST(r.pause_until, t.now + LEAST(%s, COALESCE(%s, 240.0 / r.rpm))))
FROM t WHERE r.account = %s AND r.model = %s
"""
# A worker joins the model's row: the lower of the rates while others are sending (a limit
# set lower elsewhere holds), its own once the row has been idle a minute (an old run's
# limit, or an old penalty, does not hold for ever).
_JOIN = f"""
INSERT INTO rate_slots (account, model, next_slot, pause_until, rpm) VALUES (%s, %s, 0, 0, %s)
ON CONFLICT (account, model) DO UPDATE SET rpm = CASE
    WHEN GREATEST(rate_slots.next_slot, rate_slots.pause_until) < ({NOW_SQL}) - 60
    THEN excluded.rpm ELSE LEAST(rate_slots.rpm, excluded.rpm) END
"""
_REWARD = "UPDATE rate_slots SET rpm = LEAST(%s, rpm * 1.05) WHERE account = %s AND model = %s"


class SharedRateLimiter:
    """``acquire`` / ``penalize`` / ``reward`` as the local limiter, slots in the database."""

    def __init__(
        self,
        url: str,
        account: str,
        model: str,
        rpm: float,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        margin: float = MARGIN,
    ) -> None:
        if rpm <= 0 or not math.isfinite(rpm):
            raise ValueError("a shared limiter needs a finite, positive rate")
        self.url, self.account, self.model = url, account, model
        self.max_rpm = rpm * margin
        self.rpm = self.max_rpm
        self._sleep = sleep
        self._conn: Any = None
        self._lock = asyncio.Lock()
        self._successes = 0
        self._pending: set[asyncio.Task[None]] = set()
        self.penalties = 0

    @property
    def interval(self) -> float:
        return 60.0 / self.rpm

    async def _db(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                self._conn = await psycopg.AsyncConnection.connect(
                    self.url,
                    autocommit=True,
                    connect_timeout=CONNECT_TIMEOUT_S,
                    application_name="pipelines-limiter",
                )
                await self._conn.execute(_JOIN, (self.account, self.model, self.max_rpm))
            except psycopg.Error as exc:
                raise self._problem(exc) from None
        return self._conn

    def _problem(self, exc: BaseException) -> StateError:
        return database_problem(self.url, exc, "(the shared rate limiter) failed")

    async def _run(self, sql: str, args: tuple[Any, ...]) -> Any:
        import psycopg

        async with self._lock:  # one statement at a time on the connection
            conn = await self._db()
            try:
                cur = await conn.execute(sql, args)
                return await cur.fetchone() if cur.description else None
            except psycopg.Error as exc:
                raise self._problem(exc) from None

    async def acquire(self) -> None:
        """Wait for this caller's slot on the account's shared timeline."""
        while True:
            slot, now, _ = await self._run(_TAKE, (self.account, self.model))
            if slot > now:
                await self._sleep(float(slot - now))
            # a 3021 from any machine while we slept (a pause beyond our slot, which was
            # after every pause known when it was taken) moves everyone's slots back
            (pause_until,) = await self._run(_CHECK, (self.account, self.model))
            if pause_until <= slot + 1e-6:
                return

    def penalize(self, retry_after: float | None = None) -> None:
        """The server said the account is too fast: pause every worker, then go slower."""
        self.penalties += 1
        self._successes = 0
        self.rpm = max(self.max_rpm * MIN_FRACTION, self.rpm * 0.8)
        pause = retry_after if retry_after and retry_after > 0 else None
        args = (self.max_rpm * MIN_FRACTION, MAX_PAUSE_S, pause, MAX_PAUSE_S, pause)
        self._spawn(self._run(_PENALIZE, (*args, self.account, self.model)))

    def reward(self) -> None:
        """A request went through: creep the shared rate back toward the configured one."""
        if self.rpm >= self.max_rpm:
            return
        self._successes += 1
        if self._successes >= 20:
            self._successes = 0
            self.rpm = min(self.max_rpm, self.rpm * 1.05)
            self._spawn(self._run(_REWARD, (self.max_rpm, self.account, self.model)))

    def _spawn(self, work: Awaitable[Any]) -> None:
        async def run() -> None:
            await work

        task = asyncio.ensure_future(run())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def aclose(self) -> None:
        """Wait for the pending writes, then close the connection."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self._conn is not None:
            await self._conn.close()
