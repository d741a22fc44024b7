"""The emulator's sense of time: one object it asks for "now" and waits on, so tests can move it.

Everything in the emulator that depends on time goes through a :class:`Clock`: the sliding
60-second rate windows and their ``Retry-After``, the emulated UTC day, capacity bursts,
added latency and Batch API turnaround. :class:`SystemClock` (the default) is real time;
:class:`FakeClock` moves only when told to, so a test can let a minute pass in no time::

    clock = FakeClock()
    with running_emulator(EmulatorConfig(batch_delay_s=30), clock=clock) as emu:
        ...                       # submit a batch
        clock.advance(30)         # the batch is done, without waiting 30 s
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """What the emulator asks of time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (windows, bursts, batch delays)."""
        ...

    def now(self) -> datetime:
        """The current time, timezone-aware UTC (the emulated day follows its date)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (added latency)."""
        ...


class SystemClock:
    """Real time: ``time.monotonic``, the system's UTC time and ``asyncio.sleep``."""

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def now(self) -> datetime:
        """``datetime.now(UTC)``."""
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep(seconds)``."""
        await asyncio.sleep(seconds)


class FakeClock:
    """Time that moves only by :meth:`advance`, or by a :meth:`sleep` (which returns at once).

    The wall clock starts at ``start`` (default: the real time when the clock is made, so
    the emulated day is today's UTC date, as with real time) and moves with the monotonic
    one. Safe to advance from a test's thread while the emulator's thread reads it.
    """

    def __init__(self, start: datetime | None = None, *, monotonic: float = 1_000.0) -> None:
        begin = start if start is not None else datetime.now(UTC)
        if begin.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start time")
        self._start = begin.astimezone(UTC)
        self._origin = monotonic
        self._elapsed = 0.0
        self._lock = threading.Lock()
        self.slept: list[float] = []
        """Every sleep asked for, in order (what latency the emulator added)."""

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass."""
        if seconds < 0:
            raise ValueError("a clock cannot go back")
        with self._lock:
            self._elapsed += seconds

    def monotonic(self) -> float:
        """Seconds since an arbitrary origin; moves only when the clock is advanced."""
        with self._lock:
            return self._origin + self._elapsed

    def now(self) -> datetime:
        """The start time plus everything advanced since."""
        with self._lock:
            return self._start + timedelta(seconds=self._elapsed)

    async def sleep(self, seconds: float) -> None:
        """Record the wait and let that much time pass, without really waiting."""
        with self._lock:
            self.slept.append(seconds)
            self._elapsed += max(0.0, seconds)
        await asyncio.sleep(0)  # still a point where other requests may run
