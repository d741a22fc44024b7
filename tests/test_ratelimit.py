"""The shared requests-per-minute limiter, on a fake clock (no real sleeping)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from pipelines.run.ratelimit import MARGIN, RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def test_slots_are_evenly_spaced_and_never_exceed_the_rate_in_any_minute() -> None:
    # a frozen clock: each caller's release time is now + the one sleep it was given
    now = 1000.0
    sent: list[float] = []
    waits: dict[int, float] = {}

    async def frozen_sleep(seconds: float) -> None:
        waits[id(asyncio.current_task())] = seconds
        await asyncio.sleep(0)

    limiter = RateLimiter(600, clock=lambda: now, sleep=frozen_sleep)

    async def worker() -> None:
        for _ in range(50):
            waits[id(asyncio.current_task())] = 0.0
            await limiter.acquire()
            sent.append(now + waits[id(asyncio.current_task())])

    async def main() -> None:
        await asyncio.gather(*(worker() for _ in range(8)))

    asyncio.run(main())
    sent.sort()
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert min(gaps) == pytest.approx(60 / (600 * MARGIN))
    # any 60-second window holds at most the configured count
    for i, t in enumerate(sent):
        in_window = sum(1 for u in sent[i:] if u < t + 60)
        assert in_window <= 600


def test_a_3021_pauses_everybody_and_lowers_the_rate_then_it_recovers() -> None:
    clock = FakeClock()
    limiter = RateLimiter(600, clock=clock, sleep=clock.sleep)

    async def main() -> None:
        await limiter.acquire()
        limiter.penalize(retry_after=5)
        before = clock.now
        await limiter.acquire()
        assert clock.now >= before + 5

    asyncio.run(main())
    assert limiter.rpm < limiter.max_rpm
    for _ in range(2000):
        limiter.reward()
    assert limiter.rpm == pytest.approx(limiter.max_rpm)


def test_rejects_a_non_positive_rate() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)


def test_a_huge_retry_after_pauses_no_longer_than_the_cap() -> None:
    from pipelines.run.ratelimit import MAX_PAUSE_S, RateLimiter

    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])
    limiter.penalize(999_999)  # a server asking for 11 days
    assert limiter._pause_until == pytest.approx(MAX_PAUSE_S)
