"""CloudflareProvider against the local emulator over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import io
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import jsonschema
import numpy as np
import pytest
import soundfile as sf

from pipelines.catalog.models import ModelInfo, get_model
from pipelines.core.errors import (
    AuthenticationFailed,
    DailyNeuronsExhausted,
    InvalidInput,
    RateLimited,
    UnknownModel,
)
from pipelines.emulator import FakeClock, RunningEmulator
from pipelines.providers import CloudflareProvider, ProviderSettings, RetryPolicy, with_retries

T = TypeVar("T")

TOKEN = "emulator-token-0123456789"
SMALL = get_model("@cf/baai/bge-small-en-v1.5")
WHISPER = get_model("@cf/openai/whisper")
TURBO = get_model("@cf/openai/whisper-large-v3-turbo")


def wav_bytes(seconds: float = 1.0, rate: int = 16_000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 440.0 * t)
    buf = io.BytesIO()
    sf.write(buf, tone, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def check_output(result: Any, model: ModelInfo) -> None:
    """Validate against the published output schema. Its top-level ``oneOf`` is read as
    ``anyOf``: the "Async response" alternative requires nothing, so every embedding result
    matches it too and a strict ``oneOf`` would reject all of them."""
    schema = dict(model.output_schema)
    if "oneOf" in schema:
        schema["anyOf"] = schema.pop("oneOf")
    jsonschema.validate(result, schema)


def call(
    emu: RunningEmulator, fn: Callable[[CloudflareProvider], Awaitable[T]], token: str = TOKEN
) -> T:
    settings = ProviderSettings(base_url=emu.base_url, account_id="acct", token=token)

    async def go() -> T:
        async with CloudflareProvider(settings, timeout_s=30.0) as provider:
            assert isinstance(provider, CloudflareProvider)
            return await fn(provider)

    return asyncio.run(go())


def run(emu: RunningEmulator, model: ModelInfo, inputs: dict[str, Any], token: str = TOKEN) -> Any:
    return call(emu, lambda p: p.run(model, inputs), token)


pytestmark = pytest.mark.emulator(token=TOKEN)


def test_embedding_call(emu: RunningEmulator) -> None:
    result = run(emu, SMALL, {"text": ["hello world", "a second text"]})
    check_output(result, SMALL)
    assert result["shape"] == [2, 384]
    assert len(result["data"]) == 2 and len(result["data"][0]) == 384


def test_whisper_raw_body_call(emu: RunningEmulator) -> None:
    before = emu.stats()["models"].get(WHISPER.id, {}).get("audio_seconds", 0.0)
    result = run(emu, WHISPER, {"audio": wav_bytes(1.0)})
    check_output(result, WHISPER)
    assert isinstance(result["text"], str)
    after = emu.stats()["models"][WHISPER.id]["audio_seconds"]
    assert after - before == pytest.approx(1.0, abs=0.05)


def test_turbo_base64_call(emu: RunningEmulator) -> None:
    result = run(emu, TURBO, {"audio": wav_bytes(2.0), "language": "en"})
    check_output(result, TURBO)
    assert result["transcription_info"]["duration"] == pytest.approx(2.0, abs=0.05)


def test_auth_failure(emu: RunningEmulator) -> None:
    wrong = "wrong-token-abcdef"
    with pytest.raises(AuthenticationFailed) as info:
        run(emu, SMALL, {"text": ["a"]}, token=wrong)
    assert (info.value.status, info.value.code) == (401, 10000)
    assert wrong not in str(info.value) and TOKEN not in str(info.value)


def test_unknown_model(emu: RunningEmulator) -> None:
    ghost = dataclasses.replace(SMALL, id="@cf/baai/bge-does-not-exist")
    with pytest.raises(UnknownModel) as info:
        run(emu, ghost, {"text": ["a"]})
    assert info.value.code == 5007


def test_too_many_texts_is_5006(emu: RunningEmulator) -> None:
    with pytest.raises(InvalidInput) as info:
        run(emu, SMALL, {"text": ["a"] * 101})
    assert (info.value.status, info.value.code) == (400, 5006)


@pytest.mark.emulator(token=TOKEN, batch_delay_s=30)
def test_batch_api_round_trip(emu: RunningEmulator, fake_clock: FakeClock) -> None:
    async def go(p: CloudflareProvider) -> dict[str, Any] | None:
        request_id = await p.submit_batch(SMALL, [{"text": ["a", "b"]}, {"text": ["c"]}])
        assert await p.poll_batch(SMALL, request_id) is None  # queued
        fake_clock.advance(29)
        assert await p.poll_batch(SMALL, request_id) is None  # running
        fake_clock.advance(1)
        return await p.poll_batch(SMALL, request_id)

    done = call(emu, go)
    assert done is not None
    by_id = {r["id"]: r["result"] for r in done["responses"]}
    assert by_id[0]["shape"] == [2, 384] and by_id[1]["shape"] == [1, 384]


def test_fetch_usage_matches_the_emulator(emu: RunningEmulator) -> None:
    run(emu, SMALL, {"text": ["count me"]})
    stats = emu.stats()
    usage = call(emu, lambda p: p.fetch_usage(stats["day"]))
    assert usage[SMALL.id] == pytest.approx(stats["models"][SMALL.id]["neurons"])
    assert call(emu, lambda p: p.fetch_usage(str(dt.date(2001, 1, 1)))) == {}


@pytest.mark.emulator(token=TOKEN, rpm_scale=1 / 3000)
def test_rate_limit_3021_with_retry_after(emu: RunningEmulator, fake_clock: FakeClock) -> None:
    async def twice(p: CloudflareProvider) -> None:
        await p.run(SMALL, {"text": ["one"]})
        fake_clock.advance(45)
        await p.run(SMALL, {"text": ["two"]})

    with pytest.raises(RateLimited) as info:
        call(emu, twice)
    assert (info.value.status, info.value.code) == (429, 3021)
    assert info.value.retry_after == 15.0
    fake_clock.advance(15)
    assert run(emu, SMALL, {"text": ["three"]})["shape"] == [1, 384]


@pytest.mark.parametrize("code", [3036, 4006])
def test_daily_exhaustion_is_terminal(emu: RunningEmulator, code: int) -> None:
    emu.config.daily_neurons, emu.config.exhausted_code = 0.001, code
    run(emu, SMALL, {"text": ["spends the whole allocation"]})
    slept: list[float] = []

    async def fake_sleep(s: float) -> None:
        slept.append(s)

    async def retried(p: CloudflareProvider) -> Any:
        return await with_retries(
            lambda: p.run(SMALL, {"text": ["too late"]}), RetryPolicy(), sleep=fake_sleep
        )

    with pytest.raises(DailyNeuronsExhausted) as info:
        call(emu, retried)
    assert (info.value.status, info.value.code) == (429, code)
    assert "00:00 UTC" in info.value.message
    assert slept == []
    assert emu.stats()["status_counts"].get("429") == 1
