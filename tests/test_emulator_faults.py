"""Injected faults: 5xx, capacity refusals and bursts, latency, dropped connections, garbage."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from pipelines.emulator import EmulatorConfig, FakeClock, RunningEmulator

AUTH = {"Authorization": "Bearer test-token"}
SMALL = "@cf/baai/bge-small-en-v1.5"


@pytest.fixture()
def url(emu: RunningEmulator) -> str:
    return f"{emu.base_url}/accounts/acct/ai/run/{SMALL}"


def test_error_rate_one_gives_5xx_envelopes(emu: RunningEmulator, url: str) -> None:
    emu.config.error_rate = 1.0
    statuses = set()
    for _ in range(12):
        response = httpx.post(url, json={"text": "x"}, headers=AUTH)
        body = response.json()
        assert body["success"] is False and body["errors"][0]["code"] == response.status_code
        statuses.add(response.status_code)
    assert statuses <= {500, 502, 503} and len(statuses) >= 2
    assert emu.stats()["neurons_today"] == 0


def test_capacity_rate_gives_3040(emu: RunningEmulator, url: str) -> None:
    emu.config.capacity_rate = 1.0
    response = httpx.post(url, json={"text": "x"}, headers=AUTH)
    assert response.status_code == 429
    assert response.json()["errors"][0] == {
        "code": 3040,
        "message": "Capacity temporarily exceeded, please try again.",
    }


@pytest.mark.emulator(capacity_burst_every_s=60, capacity_burst_len_s=15)
def test_capacity_bursts_come_and_go(url: str, fake_clock: FakeClock) -> None:
    codes = []
    for _ in range(12):  # two periods, 10 s apart: 0-15 s of every 60 s is an outage
        codes.append(httpx.post(url, json={"text": "x"}, headers=AUTH).status_code)
        fake_clock.advance(10)
    assert codes == [429, 429, 200, 200, 200, 200] * 2


@pytest.mark.emulator(latency_ms=150, latency_jitter_ms=20, spike_rate=1.0, spike_ms=1000)
def test_latency_is_added(url: str, fake_clock: FakeClock) -> None:
    for _ in range(3):
        assert httpx.post(url, json={"text": "x"}, headers=AUTH).status_code == 200
    assert len(fake_clock.slept) == 3
    assert all(1.130 <= s <= 1.170 for s in fake_clock.slept), fake_clock.slept
    assert len(set(fake_clock.slept)) == 3  # jittered


def test_dropped_connection_raises_in_the_client(emu: RunningEmulator, url: str) -> None:
    emu.config.drop_rate = 1.0
    with httpx.Client(headers=AUTH) as client:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            client.post(url, json={"text": "x"})
        emu.config.drop_rate = 0.0
        assert client.post(url, json={"text": "x"}).status_code == 200  # reconnects
    stats = emu.stats()
    assert stats["status_counts"] == {"dropped": 1, "200": 1}
    assert stats["models"][SMALL]["requests"] == 1  # the dropped one was not billed


def test_malformed_body_is_not_json(emu: RunningEmulator, url: str) -> None:
    emu.config.malformed_rate = 1.0
    response = httpx.post(url, json={"text": "x"}, headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(ValueError):
        response.json()


def test_faults_are_reproducible_for_a_seed(
    emulator_factory: Callable[..., RunningEmulator],
) -> None:
    def sequence(seed: int) -> list[int]:
        emu = emulator_factory(error_rate=0.5, seed=seed)
        with httpx.Client(headers=AUTH) as client:
            target = f"{emu.base_url}/accounts/a/ai/run/{SMALL}"
            return [client.post(target, json={"text": "x"}).status_code for _ in range(16)]

    first = sequence(3)
    assert first == sequence(3)
    assert 200 in first and any(s >= 500 for s in first)


def test_bad_knobs_are_rejected() -> None:
    with pytest.raises(ValueError, match="exhausted_code"):
        EmulatorConfig(exhausted_code=1234)
    with pytest.raises(ValueError, match="error_rate"):
        EmulatorConfig(error_rate=2.0)
