"""Every error path of the emulator, over real HTTP: codes, statuses, messages, headers."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pipelines.emulator import EmulatorConfig, RunningEmulator, running_emulator

AUTH = {"Authorization": "Bearer test-token"}
SMALL = "@cf/baai/bge-small-en-v1.5"


@pytest.fixture(scope="module")
def emu() -> Iterator[RunningEmulator]:
    with running_emulator(EmulatorConfig(max_body_bytes=200_000)) as running:
        yield running


@pytest.fixture()
def client(emu: RunningEmulator) -> Iterator[httpx.Client]:
    emu.reset()
    with httpx.Client(base_url=f"{emu.base_url}/accounts/acct/ai", headers=AUTH) as c:
        yield c


def fails(response: httpx.Response, status: int, code: int, text: str = "") -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is False and body["result"] is None and body["messages"] == []
    assert body["errors"][0]["code"] == code
    assert text in body["errors"][0]["message"]
    return body


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"text": ["t"] * 101}, "maxItems at '/text'"),
        ({"text": ["fine", ""]}, "minLength at '/text/1'"),
        ({"text": ""}, ""),
        ({"pooling": "mean"}, ""),
        ({"text": ["x"], "pooling": "max"}, ""),
    ],
)
def test_bad_input_is_5006(client: httpx.Client, body: dict[str, Any], where: str) -> None:
    out = fails(client.post(f"/run/{SMALL}", json=body), 400, 5006, "AiError: Bad input")
    assert where in out["errors"][0]["message"]


def test_missing_fields_name_the_field(client: httpx.Client) -> None:
    body = {"text": "hello"}
    fails(client.post("/run/@cf/meta/m2m100-1.2b", json=body), 400, 5006, "target_lang")
    fails(
        client.post("/run/@cf/meta/m2m100-1.2b", json={**body, "target_lang": "xx-klingon"}),
        400,
        5006,
        "unsupported language",
    )
    fails(client.post("/run/@cf/qwen/qwen3-embedding-0.6b", json={}), 400, 5006)


def test_long_texts_over_the_token_limit_are_refused(client: httpx.Client) -> None:
    long_text = "word " * 600
    fails(client.post(f"/run/{SMALL}", json={"text": [long_text]}), 400, 5006, "limit of 512")


def test_empty_or_non_json_body_is_3003(client: httpx.Client) -> None:
    fails(client.post(f"/run/{SMALL}", content=b""), 400, 3003)
    fails(client.post(f"/run/{SMALL}", content=b"{not json"), 400, 3003)
    fails(
        client.post("/run/@cf/openai/whisper", content=b"", headers={"content-type": "audio/wav"}),
        400,
        3003,
    )


def test_unknown_model_is_5007(client: httpx.Client) -> None:
    fails(
        client.post("/run/@cf/nobody/nothing", json={"text": "x"}),
        400,
        5007,
        "No such model @cf/nobody/nothing",
    )


def test_auth_is_required(emu: RunningEmulator) -> None:
    url = f"{emu.base_url}/accounts/acct/ai/run/{SMALL}"
    fails(httpx.post(url, json={"text": "x"}), 401, 10000, "Authentication error")
    fails(httpx.post(url, json={"text": "x"}, headers={"Authorization": "Bearer"}), 401, 10000)
    fails(httpx.post(url, json={"text": "x"}, headers={"Authorization": "Basic abc"}), 401, 10000)


def test_configured_token_is_the_only_one_accepted() -> None:
    with running_emulator(EmulatorConfig(token="s3cret")) as emu:
        url = f"{emu.base_url}/accounts/acct/ai/run/{SMALL}"
        fails(httpx.post(url, json={"text": "x"}, headers=AUTH), 401, 10000)
        ok = httpx.post(url, json={"text": "x"}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200


def test_oversized_body_is_413_3006(client: httpx.Client) -> None:
    big = {"text": ["y" * 1000] * 300}
    fails(client.post(f"/run/{SMALL}", json=big), 413, 3006, "Request is too large")
    # the connection stays usable afterwards
    assert client.post(f"/run/{SMALL}", json={"text": "ok"}).status_code == 200


def test_bad_base64_is_5004_and_undecodable_audio_is_5006(client: httpx.Client) -> None:
    turbo = "/run/@cf/openai/whisper-large-v3-turbo"
    fails(client.post(turbo, json={"audio": "%%% not base64 %%%"}), 400, 5004)
    garbage = base64.b64encode(b"definitely not audio" * 20).decode()
    fails(client.post(turbo, json={"audio": garbage}), 400, 5006, "could not decode the audio")
    raw = {"content-type": "application/octet-stream"}
    fails(
        client.post("/run/@cf/openai/whisper", content=b"\x00\x01" * 300, headers=raw),
        400,
        5006,
        "could not decode the audio",
    )
    fails(client.post("/run/@cf/openai/whisper", json={"audio": [1, 2, 999]}), 400, 5006)


def test_per_minute_limit_is_3021_with_retry_after() -> None:
    # bge-small allows 3000/min; scaled to 2 per sliding minute
    with running_emulator(EmulatorConfig(rpm_scale=2 / 3000)) as emu:
        url = f"{emu.base_url}/accounts/acct/ai/run/{SMALL}"
        for _ in range(2):
            assert httpx.post(url, json={"text": "x"}, headers=AUTH).status_code == 200
        limited = httpx.post(url, json={"text": "x"}, headers=AUTH)
        fails(limited, 429, 3021, "rate limiting: inference request per min rate reached")
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        # windows are per model
        other = f"{emu.base_url}/accounts/acct/ai/run/@cf/baai/bge-base-en-v1.5"
        assert httpx.post(other, json={"text": "x"}, headers=AUTH).status_code == 200
        assert emu.stats()["error_codes"] == {"3021": 1}


@pytest.mark.parametrize("code", [3036, 4006])
def test_daily_cap_until_the_day_changes(code: int) -> None:
    # bge-large: 18,582 neurons per M tokens; ~100 tokens cost ~1.9 neurons
    cfg = EmulatorConfig(daily_neurons=1, exhausted_code=code)
    with running_emulator(cfg) as emu:
        url = f"{emu.base_url}/accounts/acct/ai/run/@cf/baai/bge-large-en-v1.5"
        texts = ["some words to embed here"] * 14
        first = httpx.post(url, json={"text": texts}, headers=AUTH)
        assert first.status_code == 200  # started under the cap: served and billed in full
        assert emu.stats()["neurons_today"] > 1
        body = fails(httpx.post(url, json={"text": "x"}, headers=AUTH), 429, code)
        message = body["errors"][0]["message"]
        assert "daily free allocation of 1 neurons" in message
        if code == 4006:
            assert message.startswith("4006: you have used up")
        else:
            assert message.startswith("You have used up your daily free allocation")
        day = emu.stats()["day"]
        assert emu.advance_day() > day
        assert httpx.post(url, json={"text": "x"}, headers=AUTH).status_code == 200
        stats = emu.stats()
        assert set(stats["history"]) == {day, stats["day"]}


def test_strict_cap_refuses_a_request_that_would_cross() -> None:
    with running_emulator(EmulatorConfig(daily_neurons=1, strict_cap=True)) as emu:
        url = f"{emu.base_url}/accounts/acct/ai/run/@cf/baai/bge-large-en-v1.5"
        fails(httpx.post(url, json={"text": ["some words"] * 60}, headers=AUTH), 429, 3036)
        assert emu.stats()["neurons_today"] == 0  # refused requests are not billed
        assert httpx.post(url, json={"text": "small"}, headers=AUTH).status_code == 200


def test_queue_request_on_a_non_batch_model_is_refused(client: httpx.Client) -> None:
    body = {"requests": [{"text": "fine"}]}
    out = client.post("/run/@cf/huggingface/distilbert-sst-2-int8?queueRequest=true", json=body)
    fails(out, 400, 5006, "does not support the asynchronous Batch API")


def test_failed_requests_are_not_billed(emu: RunningEmulator, client: httpx.Client) -> None:
    client.post(f"/run/{SMALL}", json={"text": ["t"] * 101})
    client.post("/run/@cf/openai/whisper-large-v3-turbo", json={"audio": "%%%"})
    stats = emu.stats()
    assert stats["neurons_today"] == 0 and stats["models"] == {}
    assert stats["status_counts"] == {"400": 2}
    assert stats["error_codes"] == {"5006": 1, "5004": 1}
