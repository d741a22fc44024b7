"""Stopping a run: why it stops, and waits that end the moment it does.

The first stop (Ctrl-C, SIGTERM, the budget, an abort) means no new request is sent: calls
not yet started stay pending for the next run, requests in flight finish and are kept. A
second Ctrl-C or SIGTERM abandons the requests in flight at once. Every pause (backoff,
rate limiter, Retry-After) is a :meth:`Stopper.pause`, which returns as soon as a stop
comes, so nothing keeps a stopped run alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from pipelines.core.errors import PipelinesError
from pipelines.run.clock import Clock
from pipelines.run.report import StopReason

log = logging.getLogger("pipelines")

# Stops after which no request goes out at all, and every pause ends at once.
_HARD = (StopReason.INTERRUPTED, StopReason.ABORTED)


class Stopped(Exception):
    """Internal: the run is stopping, so this call is left pending."""


class Stopper:
    """Holds the run's stop reason (the first one wins, except that an abort overrides)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.reason: StopReason | None = None
        self.message = ""
        self.error: PipelinesError | None = None
        self.signals = 0
        self._event = asyncio.Event()
        self.on_abandon: Callable[[], None] | None = None

    @property
    def stopping(self) -> bool:
        return self.reason is not None

    @property
    def hard(self) -> bool:
        """Whether nothing may go out any more (Ctrl-C, an abort), polls included."""
        return self.reason in _HARD

    async def until_hard(self) -> None:
        """Return once a stop comes after which nothing may go out."""
        await self._event.wait()

    def stop(self, reason: StopReason, message: str = "") -> None:
        """Stop taking new work; in-flight requests finish and are kept."""
        if self.reason is None or reason is StopReason.ABORTED:
            self.reason = reason
            self.message = message or self.message
        if reason in _HARD:
            self._event.set()

    def abort(self, error: PipelinesError) -> None:
        """Stop because of ``error`` (credentials, model, disk): exit 2."""
        self.error = error
        self.stop(StopReason.ABORTED, error.message)

    def signal(self) -> None:
        """Ctrl-C or SIGTERM: the first stops new work, the second abandons what is in flight."""
        self.signals += 1
        if self.signals == 1:
            log.warning("stopping… (requests in flight finish; press Ctrl-C again to abandon them)")
            self.stop(StopReason.INTERRUPTED, "interrupted; re-run to resume")
        elif self.on_abandon is not None:
            log.warning("abandoning the requests in flight")
            self.on_abandon()

    def check_send(self) -> None:
        """Raise :class:`Stopped` if no request may go out any more: after Ctrl-C or an abort.
        A budget stop still lets the requests already reserved go (they fit the budget)."""
        if self.reason in _HARD:
            raise Stopped

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds`` on the run's clock, or less if Ctrl-C or an abort comes
        meanwhile (a budget stop lets a request already reserved wait for its slot)."""
        self.check_send()
        if seconds <= 0:
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        waiter = asyncio.ensure_future(self._event.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waiter):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.check_send()
