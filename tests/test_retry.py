"""with_retries and RetryPolicy against a fake clock: what is retried, how often, how long."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from pipelines.core.errors import (
    AuthenticationFailed,
    CapacityExceeded,
    DailyNeuronsExhausted,
    InvalidInput,
    ProviderError,
    RateLimited,
    ServerError,
    TransportError,
)
from pipelines.providers import RetryPolicy, with_retries
from pipelines.providers.refusals import error_from_response


class FakeClock:
    """Records the pauses instead of sleeping them."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


class Script:
    """An attempt that raises the given errors in order, then returns ``"ok"``."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def run(
    script: Script,
    policy: RetryPolicy,
    clock: FakeClock,
    on_retry: Callable[[BaseException, float], None] | None = None,
) -> str:
    return asyncio.run(with_retries(script, policy, sleep=clock.sleep, on_retry=on_retry))


def test_transient_errors_are_retried_until_success() -> None:
    clock = FakeClock()
    script = Script(RateLimited("r"), ServerError("s"), TransportError("t"), CapacityExceeded("c"))
    assert run(script, RetryPolicy(max_attempts=6), clock) == "ok"
    assert script.calls == 5
    assert len(clock.sleeps) == 4


def test_gives_up_after_max_attempts_and_reraises_the_last_error() -> None:
    clock = FakeClock()
    errors = [ServerError(f"boom {i}") for i in range(10)]
    script = Script(*errors)
    with pytest.raises(ServerError) as info:
        run(script, RetryPolicy(max_attempts=4), clock)
    assert info.value is errors[3]
    assert script.calls == 4
    assert len(clock.sleeps) == 3


def test_max_attempts_one_means_no_retry() -> None:
    clock = FakeClock()
    script = Script(RateLimited("r"))
    with pytest.raises(RateLimited):
        run(script, RetryPolicy(max_attempts=1), clock)
    assert script.calls == 1 and clock.sleeps == []


def envelope(code: int, message: str) -> bytes:
    return json.dumps({"success": False, "errors": [{"code": code, "message": message}]}).encode()


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (429, envelope(3036, "daily free allocation used"), DailyNeuronsExhausted),
        (429, envelope(4006, "4006: daily free allocation used"), DailyNeuronsExhausted),
        (
            500,
            json.dumps({"error": {"message": "4006: daily free allocation", "code": "x"}}).encode(),
            DailyNeuronsExhausted,
        ),
        (401, envelope(10000, "Authentication error"), AuthenticationFailed),
        (400, envelope(5006, "Bad input"), InvalidInput),
    ],
)
def test_terminal_errors_are_never_retried(
    status: int, body: bytes, kind: type[ProviderError]
) -> None:
    error = error_from_response(status, {"Retry-After": "1"}, body)
    assert type(error) is kind
    clock = FakeClock()
    script = Script(error, error, error)
    with pytest.raises(kind):
        run(script, RetryPolicy(), clock)
    assert script.calls == 1
    assert clock.sleeps == []


def test_non_provider_errors_propagate_at_once() -> None:
    clock = FakeClock()
    script = Script(KeyError("bug"))
    with pytest.raises(KeyError):
        run(script, RetryPolicy(), clock)
    assert script.calls == 1


def test_retry_after_is_a_floor_for_the_wait() -> None:
    clock = FakeClock()
    limited = error_from_response(429, {"Retry-After": "42"}, envelope(3021, "rate limited"))
    assert isinstance(limited, RateLimited)
    script = Script(limited, CapacityExceeded("c", retry_after=7.5))
    assert run(script, RetryPolicy(base_delay_s=0.01, max_delay_s=1.0), clock) == "ok"
    assert clock.sleeps[0] >= 42.0
    assert clock.sleeps[1] >= 7.5


def test_retry_after_is_capped() -> None:
    clock = FakeClock()
    script = Script(RateLimited("r", retry_after=86_400))
    run(script, RetryPolicy(max_retry_after_s=300.0), clock)
    assert clock.sleeps == [300.0]


def test_backoff_without_jitter_doubles_up_to_the_cap() -> None:
    clock = FakeClock()
    script = Script(*[ServerError("s") for _ in range(7)])
    policy = RetryPolicy(max_attempts=8, base_delay_s=0.5, max_delay_s=10.0, jitter=False)
    run(script, policy, clock)
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_full_jitter_stays_within_the_ceiling() -> None:
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=60.0, jitter=True)
    assert policy.delay(3, rand=lambda: 0.0) == 0.0
    assert policy.delay(3, rand=lambda: 1.0) == 2.0
    assert policy.delay(20, rand=lambda: 1.0) == 60.0
    assert policy.delay(3, RateLimited("r", retry_after=5.0), rand=lambda: 0.0) == 5.0
    clock = FakeClock()
    run(Script(*[ServerError("s") for _ in range(5)]), policy, clock)
    ceilings = [0.5, 1.0, 2.0, 4.0, 8.0]
    assert all(0.0 <= s <= c for s, c in zip(clock.sleeps, ceilings, strict=True))


def test_on_retry_sees_each_error_and_its_wait() -> None:
    clock = FakeClock()
    seen: list[tuple[BaseException, float]] = []
    first, second = RateLimited("r", retry_after=3.0), ServerError("s")
    run(Script(first, second), RetryPolicy(jitter=False), clock, lambda e, w: seen.append((e, w)))
    assert [e for e, _ in seen] == [first, second]
    assert [w for _, w in seen] == clock.sleeps == [3.0, 1.0]


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"base_delay_s": -1.0}, {"max_delay_s": -1.0}]
)
def test_policy_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)
