"""Injected faults: 5xx, capacity refusals and bursts, latency, dropped connections, garbage."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from pipelines.emulator import EmulatorConfig, RunningEmulator, running_emulator

AUTH = {"Authorization": "Bearer test-token"}
SMALL = "@cf/baai/bge-small-en-v1.5"


@pytest.fixture(scope="module")
def emu() -> Iterator[RunningEmulator]:
    with running_emulator(EmulatorConfig()) as running:
        yield running


@pytest.fixture()
def url(emu: RunningEmulator) -> Iterator[str]:
    emu.reset()
    yield f"{emu.base_url}/accounts/acct/ai/run/{SMALL}"
    for knob in ("error_rate", "capacity_rate", "drop_rate", "malformed_rate", "latency_ms"):
        setattr(emu.config, knob, 0.0)
    emu.config.capacity_burst_every_s = emu.config.capacity_burst_len_s = 0.0


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


def test_capacity_bursts_come_and_go(emu: RunningEmulator, url: str) -> None:
    emu.config.capacity_burst_every_s = 0.6
    emu.config.capacity_burst_len_s = 0.3
    emu.reset()  # bursts are timed from the (re)start
    codes = []
    deadline = time.monotonic() + 1.3
    while time.monotonic() < deadline:
        codes.append(httpx.post(url, json={"text": "x"}, headers=AUTH).status_code)
        time.sleep(0.05)
    assert codes[0] == 429 and 200 in codes and codes.count(429) >= 3


def test_latency_is_added(emu: RunningEmulator, url: str) -> None:
    emu.config.latency_ms = 150
    start = time.perf_counter()
    assert httpx.post(url, json={"text": "x"}, headers=AUTH).status_code == 200
    assert time.perf_counter() - start >= 0.15


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


def test_faults_are_reproducible_for_a_seed() -> None:
    def sequence(seed: int) -> list[int]:
        cfg = EmulatorConfig(error_rate=0.5, seed=seed)
        with running_emulator(cfg) as emu, httpx.Client(headers=AUTH) as client:
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
