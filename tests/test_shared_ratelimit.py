"""Issue 17: the rate limiter shared through the ledger's database. Two limiters stand in
for two machines: they take slots from one timeline, a 3021 on one pauses the other, and
the database's clock, never a machine's, decides when a slot comes. Sleeps are recorded,
never slept."""

from __future__ import annotations

import asyncio
import time

import pytest

from pipelines.budget import Ledger
from pipelines.core.errors import StateError
from pipelines.run.shared_limit import SharedRateLimiter

MODEL = "@cf/baai/bge-small-en-v1.5"


@pytest.fixture
def pg_url(pg_url: str) -> str:
    """The database with the ledger's tables (a run opens its ledger before it sends)."""
    Ledger(url=pg_url, day_fn=lambda: "2026-11-28").close()
    return pg_url


class Sleeps:
    """An injected sleep: records each wait and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def machines(url: str, rpm: float = 60) -> tuple[SharedRateLimiter, SharedRateLimiter, Sleeps]:
    sleeps = Sleeps()
    a = SharedRateLimiter(url, "acct", MODEL, rpm, sleep=sleeps, margin=1.0)
    b = SharedRateLimiter(url, "acct", MODEL, rpm, sleep=sleeps, margin=1.0)
    return a, b, sleeps


def test_two_machines_take_slots_from_one_timeline(pg_url: str) -> None:
    async def go() -> list[float]:
        a, b, sleeps = machines(pg_url)
        for i in range(10):
            await (a if i % 2 else b).acquire()
        await a.aclose()
        await b.aclose()
        return sleeps.waits

    waits = asyncio.run(go())
    # 60 a minute together: the k-th slot is k seconds on, whichever machine took it
    # (the first is immediate; the database's clock moves on a little meanwhile)
    assert len(waits) == 9
    for k, wait in enumerate(waits, start=1):
        assert k - 0.5 < wait <= k + 1e-6


def test_a_3021_on_one_machine_pauses_the_other(pg_url: str) -> None:
    async def go() -> list[float]:
        a, b, sleeps = machines(pg_url)
        await a.acquire()
        a.penalize(retry_after=30)
        await a.aclose()  # the pause is written
        await b.acquire()
        await b.aclose()
        return sleeps.waits

    waits = asyncio.run(go())
    assert waits and 29 < waits[-1] <= 30 + 1e-6


def test_other_accounts_and_models_have_their_own_slots(pg_url: str) -> None:
    async def go() -> list[float]:
        sleeps = Sleeps()
        one = SharedRateLimiter(pg_url, "acct", MODEL, 1, sleep=sleeps)
        other = SharedRateLimiter(pg_url, "other", MODEL, 1, sleep=sleeps)
        model = SharedRateLimiter(pg_url, "acct", "@cf/other", 1, sleep=sleeps)
        for limiter in (one, other, model):
            await limiter.acquire()
            await limiter.aclose()
        return sleeps.waits

    assert asyncio.run(go()) == []


def test_a_machine_clock_that_is_off_changes_nothing(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def go() -> list[float]:
        a, b, sleeps = machines(pg_url)
        await a.acquire()
        # this "machine" is an hour ahead: its clock is never read
        monkeypatch.setattr(time, "time", lambda: 1e10)
        monkeypatch.setattr(time, "monotonic", lambda: 1e10)
        await b.acquire()
        await a.aclose()
        await b.aclose()
        return sleeps.waits

    waits = asyncio.run(go())
    assert len(waits) == 1 and 0.5 < waits[0] <= 1 + 1e-6


def test_a_database_that_is_down_is_a_state_error_without_the_password() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    limiter = SharedRateLimiter(
        f"postgresql://u:Sup3rSecret@127.0.0.1:{port}/db", "acct", MODEL, 60, sleep=Sleeps()
    )
    with pytest.raises(StateError) as info:
        asyncio.run(limiter.acquire())
    assert "Sup3rSecret" not in info.value.message and "\n" not in info.value.message


def test_an_idle_row_takes_the_new_rate_and_a_busy_one_the_lower(pg_url: str) -> None:
    import psycopg

    async def go() -> None:
        sleeps = Sleeps()
        slow = SharedRateLimiter(pg_url, "acct", MODEL, 60, sleep=sleeps, margin=1.0)
        await slow.acquire()
        fast = SharedRateLimiter(pg_url, "acct", MODEL, 120, sleep=sleeps, margin=1.0)
        await fast.acquire()  # busy: the lower rate holds
        await slow.aclose()
        await fast.aclose()

    asyncio.run(go())
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT rpm FROM rate_slots").fetchone() == (60.0,)
        conn.execute("UPDATE rate_slots SET next_slot = 0, pause_until = 0")  # long idle

    async def later() -> None:
        again = SharedRateLimiter(pg_url, "acct", MODEL, 120, sleep=Sleeps(), margin=1.0)
        await again.acquire()
        await again.aclose()

    asyncio.run(later())
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT rpm FROM rate_slots").fetchone() == (120.0,)
