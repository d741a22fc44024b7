"""Retrying provider calls: which errors, how often, how long to wait.

Only :class:`~pipelines.core.errors.TransientError` is retried. Terminal errors (bad input,
auth, unknown model, the daily neuron cap) fail at once: retrying them wastes requests, and
for the daily cap nothing changes before 00:00 UTC.

Waits are exponential with full jitter (a uniform draw between 0 and the exponential
ceiling), so many workers hit by the same 429 do not come back in lockstep. A
``retry_after`` on the error (from ``Retry-After``) is a floor for the wait.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from pipelines.core.errors import TransientError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How many tries a call gets and how long to wait between them."""

    max_attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 60.0
    jitter: bool = True
    # A server asking for a longer pause than this is more likely wrong than right, and
    # a worker stuck for an hour looks like a hang.
    max_retry_after_s: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.max_retry_after_s < 0:
            raise ValueError("delays must not be negative")

    def delay(
        self,
        attempt: int,
        error: BaseException | None = None,
        *,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2.0 ** max(0, attempt - 1))
        wait = ceiling * rand() if self.jitter else ceiling
        retry_after = getattr(error, "retry_after", None)
        if isinstance(retry_after, int | float) and retry_after > 0:
            wait = max(wait, min(float(retry_after), self.max_retry_after_s))
        return wait


def is_retryable(error: BaseException) -> bool:
    """Whether ``error`` is worth another attempt."""
    return isinstance(error, TransientError)


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_retry: Callable[[BaseException, float], None] | None = None,
) -> T:
    """Await ``attempt()`` until it succeeds, fails terminally, or runs out of attempts.

    The last error is re-raised as is (never wrapped). ``on_retry(error, wait_s)`` is
    called before each pause, e.g. to log or to slow a shared rate limiter down.
    """

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        return policy.delay(state.attempt_number, error)

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is None or state.outcome is None or state.next_action is None:
            return
        error = state.outcome.exception()
        if error is not None:
            on_retry(error, state.next_action.sleep)

    retrying = AsyncRetrying(
        sleep=sleep,
        stop=stop_after_attempt(policy.max_attempts),
        wait=wait,
        retry=retry_if_exception(is_retryable),
        before_sleep=before_sleep,
        reraise=True,
    )
    # The iterator form, because AsyncRetrying.__call__ only awaits functions it can tell
    # are coroutine functions, and ``attempt`` is often a lambda returning a coroutine.
    async for try_ in retrying:
        with try_:
            return await attempt()
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover
