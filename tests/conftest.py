"""Shared fixtures: every test gets its own state folder and a clean Cloudflare (and OpenAI)
environment, and the emulator fixtures below.

- ``emu``: a running emulator, reset, its knobs the defaults plus those of the closest
  ``@pytest.mark.emulator(**knobs)`` (on the test, its class or its module's ``pytestmark``).
  One server serves the whole session; a test that also asks for ``fake_clock`` gets a
  server of its own on that clock.
- ``fake_clock``: a :class:`~pipelines.emulator.clock.FakeClock`; ``fake_clock.advance(60)``
  lets a minute pass for the emulator at once.
- ``emulator_factory(clock=None, **knobs)``: more emulators, stopped after the test.
- ``emu_client``: an httpx client on ``{emu}/accounts/acct/ai`` with a bearer token.
- ``env``: the environment variables that point a CLI run at ``emu`` (also returned), for
  provider ``cloudflare`` and provider ``openai`` (its ``/ai/v1`` endpoints).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipelines.emulator import (
    Clock,
    EmulatorConfig,
    FakeClock,
    RunningEmulator,
    running_emulator,
)

EmulatorFactory = Callable[..., RunningEmulator]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "emulator(**knobs): EmulatorConfig knobs for the `emu` fixture"
    )


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in (
        "CLOUDFLARE_ACCOUNT_ID",
        "CLOUDFLARE_API_TOKEN",
        "CLOUDFLARE_API_TOKEN_FILE",
        "CLOUDFLARE_API_BASE_URL",
        "CLOUDFLARE_BASE_URL",
        "OPENAI_API_KEY",
        "OPENAI_API_KEY_FILE",
        "OPENAI_BASE_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIPELINES_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PIPELINES_CONFIG", str(tmp_path / "config.yaml"))
    yield


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def emulator_factory() -> Iterator[EmulatorFactory]:
    with ExitStack() as stack:

        def start(*, clock: Clock | None = None, **knobs: Any) -> RunningEmulator:
            return stack.enter_context(running_emulator(EmulatorConfig(**knobs), clock=clock))

        yield start


@pytest.fixture(scope="session")
def _shared_emulator() -> Iterator[RunningEmulator]:
    with running_emulator() as emulator:
        yield emulator


def _marked_knobs(node: pytest.Item) -> dict[str, Any]:
    knobs: dict[str, Any] = {}
    for mark in reversed(list(node.iter_markers("emulator"))):  # the closest one wins
        knobs.update(mark.kwargs)
    return knobs


@pytest.fixture
def emu(request: pytest.FixtureRequest, emulator_factory: EmulatorFactory) -> RunningEmulator:
    knobs = _marked_knobs(request.node)
    if "fake_clock" in request.fixturenames:
        return emulator_factory(clock=request.getfixturevalue("fake_clock"), **knobs)
    shared: RunningEmulator = request.getfixturevalue("_shared_emulator")
    shared.wait_idle()  # requests an earlier test's client gave up on would bill this one
    shared.reconfigure(EmulatorConfig(**knobs))
    shared.reset()
    return shared


@pytest.fixture
def emu_client(emu: RunningEmulator) -> Iterator[httpx.Client]:
    auth = {"Authorization": f"Bearer {emu.config.token or 'test-token'}"}
    with httpx.Client(base_url=f"{emu.base_url}/accounts/acct/ai", headers=auth) as client:
        yield client


@pytest.fixture
def env(emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", "acct-test")
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", emu.config.token or "secret-token-value")
    monkeypatch.setenv("CLOUDFLARE_API_BASE_URL", emu.base_url)
    # provider openai: the same emulator's OpenAI-compatible endpoints
    monkeypatch.setenv("OPENAI_API_KEY", emu.config.token or "secret-openai-key")
    monkeypatch.setenv("OPENAI_BASE_URL", f"{emu.base_url}/accounts/acct-test/ai/v1")
    return dict(os.environ)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """One PostgreSQL server for the session (tests/pg_fixture.py); skipped without binaries."""
    from pg_fixture import find_bin, postgres_server

    if find_bin("initdb") is None or find_bin("pg_ctl") is None:
        pytest.skip("PostgreSQL (initdb, pg_ctl) is not installed: apt-get install postgresql")
    with postgres_server() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: Any) -> str:
    """The URL of an empty database of its own for this test."""
    return str(pg_server.database())
