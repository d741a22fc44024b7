"""A requests-per-minute limiter shared by every worker that calls one model.

Requests are given evenly spaced send slots (no burst), so that any 60-second window holds
at most the configured number even when Cloudflare counts with a sliding window; a 1 %
margin absorbs network jitter. Waiting is one ``sleep`` until the slot, never polling. A
3021 ("per-minute rate reached") anywhere pauses everybody and lowers the rate; the rate
climbs back as requests succeed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

MARGIN = 0.99
MIN_FRACTION = 0.1
# The longest pause a server's Retry-After can impose (the same cap as for retries).
MAX_PAUSE_S = 300.0


class RateLimiter:
    """Evenly spaced send slots at ``rpm`` requests per minute."""

    def __init__(
        self,
        rpm: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        margin: float = MARGIN,
    ) -> None:
        if rpm <= 0:
            raise ValueError("requests per minute must be positive")
        self.max_rpm = rpm * margin
        self.rpm = self.max_rpm
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0
        self._pause_until = 0.0
        self._successes = 0
        self.penalties = 0

    @property
    def interval(self) -> float:
        """Seconds between two send slots at the current rate."""
        return 60.0 / self.rpm

    async def acquire(self) -> None:
        """Wait for this caller's send slot."""
        while True:
            now = self._clock()
            slot = max(now, self._next, self._pause_until)
            self._next = slot + self.interval
            if slot > now:
                await self._sleep(slot - now)
            # a 3021 that arrived while we slept moves everyone's slots back
            if self._clock() + 1e-9 >= self._pause_until:
                return

    def penalize(self, retry_after: float | None = None) -> None:
        """The server said we are too fast: pause everybody, then go slower."""
        self.penalties += 1
        self._successes = 0
        self.rpm = max(self.max_rpm * MIN_FRACTION, self.rpm * 0.8)
        pause = retry_after if retry_after and retry_after > 0 else self.interval * 4
        pause = min(pause, MAX_PAUSE_S)
        self._pause_until = max(self._pause_until, self._clock() + pause)
        self._next = max(self._next, self._pause_until)

    def reward(self) -> None:
        """A request went through: creep back toward the configured rate."""
        if self.rpm >= self.max_rpm:
            return
        self._successes += 1
        if self._successes >= 20:
            self._successes = 0
            self.rpm = min(self.max_rpm, self.rpm * 1.05)
