"""The emulator's clock: real time by default, a FakeClock that moves only when told, and
the in-flight count that lets a test wait for requests a client gave up on."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from pipelines.emulator import FakeClock, RunningEmulator, SystemClock

SMALL = "@cf/baai/bge-small-en-v1.5"
AUTH = {"Authorization": "Bearer test-token"}


def test_fake_clock_moves_only_when_told() -> None:
    start = datetime(2026, 5, 4, 23, 0, tzinfo=UTC)
    clock = FakeClock(start, monotonic=50.0)
    assert (clock.monotonic(), clock.now()) == (50.0, start)
    clock.advance(3600)
    assert clock.monotonic() == 3650.0 and clock.now() == start + timedelta(hours=1)
    asyncio.run(clock.sleep(1.5))
    assert clock.slept == [1.5] and clock.monotonic() == 3651.5
    with pytest.raises(ValueError, match="go back"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="timezone-aware"):
        FakeClock(datetime(2026, 5, 4))


def test_the_default_clock_is_real_time(emu: RunningEmulator) -> None:
    assert isinstance(emu.clock, SystemClock)
    before = datetime.now(UTC).date().isoformat()
    day = emu.stats()["day"]
    after = datetime.now(UTC).date().isoformat()
    assert day in (before, after)


class HeldClock(FakeClock):
    """A fake clock whose sleeps (the emulator's added latency) last until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    async def sleep(self, seconds: float) -> None:
        while not self.release.is_set():
            await asyncio.sleep(0.001)
        await super().sleep(seconds)


def test_wait_idle_waits_for_requests_still_being_answered(
    emulator_factory: Callable[..., RunningEmulator],
) -> None:
    clock = HeldClock()
    emu = emulator_factory(clock=clock, latency_ms=5)
    url = f"{emu.base_url}/accounts/acct/ai/run/{SMALL}"
    answers: list[int] = []
    sender = threading.Thread(
        target=lambda: answers.append(httpx.post(url, json={"text": "x"}, headers=AUTH).status_code)
    )
    sender.start()
    deadline = time.monotonic() + 30
    while emu.stats()["in_flight"] != 1:  # the request has reached its latency
        assert time.monotonic() < deadline
        time.sleep(0.005)
    with pytest.raises(TimeoutError, match="1 requests still running"):
        emu.wait_idle(timeout_s=0.05)
    clock.release.set()
    emu.wait_idle()
    sender.join()
    assert answers == [200] and clock.slept == [0.005]
    stats = emu.stats()
    assert stats["in_flight"] == 0 and stats["models"][SMALL]["requests"] == 1
