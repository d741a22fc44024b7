"""Every error path of the emulator, over real HTTP: codes, statuses, messages, headers."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from pipelines.emulator import FakeClock, RunningEmulator

AUTH = {"Authorization": "Bearer test-token"}
SMALL = "@cf/baai/bge-small-en-v1.5"
LARGE = "@cf/baai/bge-large-en-v1.5"

pytestmark = pytest.mark.emulator(max_body_bytes=200_000)


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
def test_bad_input_is_5006(emu_client: httpx.Client, body: dict[str, Any], where: str) -> None:
    out = fails(emu_client.post(f"/run/{SMALL}", json=body), 400, 5006, "AiError: Bad input")
    assert where in out["errors"][0]["message"]


def test_missing_fields_name_the_field(emu_client: httpx.Client) -> None:
    body = {"text": "hello"}
    fails(emu_client.post("/run/@cf/meta/m2m100-1.2b", json=body), 400, 5006, "target_lang")
    fails(
        emu_client.post("/run/@cf/meta/m2m100-1.2b", json={**body, "target_lang": "xx-klingon"}),
        400,
        5006,
        "unsupported language",
    )
    fails(emu_client.post("/run/@cf/qwen/qwen3-embedding-0.6b", json={}), 400, 5006)


def test_long_texts_over_the_token_limit_are_refused(emu_client: httpx.Client) -> None:
    long_text = "word " * 600
    fails(emu_client.post(f"/run/{SMALL}", json={"text": [long_text]}), 400, 5006, "limit of 512")


def test_empty_or_non_json_body_is_3003(emu_client: httpx.Client) -> None:
    fails(emu_client.post(f"/run/{SMALL}", content=b""), 400, 3003)
    fails(emu_client.post(f"/run/{SMALL}", content=b"{not json"), 400, 3003)
    fails(
        emu_client.post(
            "/run/@cf/openai/whisper", content=b"", headers={"content-type": "audio/wav"}
        ),
        400,
        3003,
    )


def test_unknown_model_is_5007(emu_client: httpx.Client) -> None:
    fails(
        emu_client.post("/run/@cf/nobody/nothing", json={"text": "x"}),
        400,
        5007,
        "No such model @cf/nobody/nothing",
    )


def test_auth_is_required(emu: RunningEmulator) -> None:
    url = f"{emu.base_url}/accounts/acct/ai/run/{SMALL}"
    fails(httpx.post(url, json={"text": "x"}), 401, 10000, "Authentication error")
    fails(httpx.post(url, json={"text": "x"}, headers={"Authorization": "Bearer"}), 401, 10000)
    fails(httpx.post(url, json={"text": "x"}, headers={"Authorization": "Basic abc"}), 401, 10000)


@pytest.mark.emulator(token="s3cret")
def test_configured_token_is_the_only_one_accepted(emu: RunningEmulator) -> None:
    url = f"{emu.base_url}/accounts/acct/ai/run/{SMALL}"
    fails(httpx.post(url, json={"text": "x"}, headers=AUTH), 401, 10000)
    ok = httpx.post(url, json={"text": "x"}, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200


def test_oversized_body_is_413_3006(emu_client: httpx.Client) -> None:
    big = {"text": ["y" * 1000] * 300}
    fails(emu_client.post(f"/run/{SMALL}", json=big), 413, 3006, "Request is too large")
    # the connection stays usable afterwards
    assert emu_client.post(f"/run/{SMALL}", json={"text": "ok"}).status_code == 200


def test_bad_base64_is_5004_and_undecodable_audio_is_5006(emu_client: httpx.Client) -> None:
    turbo = "/run/@cf/openai/whisper-large-v3-turbo"
    fails(emu_client.post(turbo, json={"audio": "%%% not base64 %%%"}), 400, 5004)
    garbage = base64.b64encode(b"definitely not audio" * 20).decode()
    fails(emu_client.post(turbo, json={"audio": garbage}), 400, 5006, "could not decode the audio")
    raw = {"content-type": "application/octet-stream"}
    fails(
        emu_client.post("/run/@cf/openai/whisper", content=b"\x00\x01" * 300, headers=raw),
        400,
        5006,
        "could not decode the audio",
    )
    fails(emu_client.post("/run/@cf/openai/whisper", json={"audio": [1, 2, 999]}), 400, 5006)


# bge-small allows 3000/min; scaled to 2 per sliding minute
@pytest.mark.emulator(rpm_scale=2 / 3000)
def test_per_minute_limit_is_3021_with_retry_after_until_the_window_slides(
    emu: RunningEmulator, fake_clock: FakeClock
) -> None:
    url = f"{emu.base_url}/accounts/acct/ai/run/{SMALL}"

    def post() -> httpx.Response:
        return httpx.post(url, json={"text": "x"}, headers=AUTH)

    assert post().status_code == 200
    fake_clock.advance(20)
    assert post().status_code == 200
    limited = post()
    fails(limited, 429, 3021, "rate limiting: inference request per min rate reached")
    assert limited.headers["Retry-After"] == "40"  # the first slot frees 60 s after it was taken
    fake_clock.advance(39.5)
    assert post().headers["Retry-After"] == "1"  # rounded up, never 0
    fake_clock.advance(0.5)
    assert post().status_code == 200  # the first request left the window...
    assert post().headers["Retry-After"] == "20"  # ...the second is in it for 20 s more
    # windows are per model
    other = f"{emu.base_url}/accounts/acct/ai/run/@cf/baai/bge-base-en-v1.5"
    assert httpx.post(other, json={"text": "x"}, headers=AUTH).status_code == 200
    assert emu.stats()["error_codes"] == {"3021": 3}


def _exhaust(emu: RunningEmulator) -> None:
    """Spend the 1-neuron allocation: bge-large bills ~1.9 neurons for 14 short texts."""
    url = f"{emu.base_url}/accounts/acct/ai/run/{LARGE}"
    first = httpx.post(url, json={"text": ["some words to embed here"] * 14}, headers=AUTH)
    assert first.status_code == 200  # started under the cap: served and billed in full
    assert emu.stats()["neurons_today"] > 1


@pytest.mark.parametrize("code", [3036, 4006])
def test_daily_cap_until_the_day_changes(emu: RunningEmulator, code: int) -> None:
    emu.config.daily_neurons, emu.config.exhausted_code = 1, code
    url = f"{emu.base_url}/accounts/acct/ai/run/{LARGE}"
    _exhaust(emu)
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


def test_the_emulated_day_follows_the_clock_past_midnight_utc(
    emulator_factory: Callable[..., RunningEmulator],
) -> None:
    fake_clock = FakeClock(datetime(2026, 3, 1, 23, 59, 30, tzinfo=UTC))
    emu = emulator_factory(clock=fake_clock, daily_neurons=1)
    url = f"{emu.base_url}/accounts/acct/ai/run/{LARGE}"
    _exhaust(emu)
    assert emu.stats()["day"] == "2026-03-01"
    fake_clock.advance(29)
    assert httpx.post(url, json={"text": "x"}, headers=AUTH).status_code == 429
    fake_clock.advance(1)  # 00:00:00 UTC
    assert httpx.post(url, json={"text": "x"}, headers=AUTH).status_code == 200
    stats = emu.stats()
    assert stats["day"] == "2026-03-02"
    assert set(stats["history"]) == {"2026-03-01", "2026-03-02"}


@pytest.mark.emulator(daily_neurons=1, strict_cap=True)
def test_strict_cap_refuses_a_request_that_would_cross(emu: RunningEmulator) -> None:
    url = f"{emu.base_url}/accounts/acct/ai/run/{LARGE}"
    fails(httpx.post(url, json={"text": ["some words"] * 60}, headers=AUTH), 429, 3036)
    assert emu.stats()["neurons_today"] == 0  # refused requests are not billed
    assert httpx.post(url, json={"text": "small"}, headers=AUTH).status_code == 200


def test_queue_request_on_a_non_batch_model_is_refused(emu_client: httpx.Client) -> None:
    body = {"requests": [{"text": "fine"}]}
    out = emu_client.post("/run/@cf/huggingface/distilbert-sst-2-int8?queueRequest=true", json=body)
    fails(out, 400, 5006, "does not support the asynchronous Batch API")


def test_failed_requests_are_not_billed(emu: RunningEmulator, emu_client: httpx.Client) -> None:
    emu_client.post(f"/run/{SMALL}", json={"text": ["t"] * 101})
    emu_client.post("/run/@cf/openai/whisper-large-v3-turbo", json={"audio": "%%%"})
    stats = emu.stats()
    assert stats["neurons_today"] == 0 and stats["models"] == {}
    assert stats["status_counts"] == {"400": 2}
    assert stats["error_codes"] == {"5006": 1, "5004": 1}


@pytest.mark.emulator(error_result_shape="object")
def test_error_answers_can_carry_an_empty_result_object(emu_client: httpx.Client) -> None:
    for response, status in [
        (emu_client.post(f"/run/{SMALL}", json={"text": ""}), 400),
        (emu_client.post(f"/run/{SMALL}", json={"text": "x"}, headers={"Authorization": ""}), 401),
    ]:
        assert response.status_code == status
        body = response.json()
        assert body["result"] == {} and body["success"] is False
        assert body["errors"][0]["code"] in (5006, 10000)


@pytest.mark.emulator(codeless_error_rate=1.0)
def test_codeless_errors_keep_their_status(emu: RunningEmulator, emu_client: httpx.Client) -> None:
    lengths = set()
    for _ in range(16):
        response = emu_client.post(f"/run/{SMALL}", json={"text": ""})
        assert response.status_code == 400
        body = response.json()
        assert body["success"] is False and body["result"] is None
        assert all(set(e) == {"message"} for e in body["errors"]), body
        assert all(e["message"].startswith("AiError: Bad input") for e in body["errors"])
        lengths.add(len(body["errors"]))
    assert lengths == {0, 1}  # a message alone, or no error at all
    assert emu.stats()["error_codes"] == {"5006": 16}  # the books still know what it was


def test_codeless_errors_do_not_change_which_requests_fail(
    emulator_factory: Callable[..., RunningEmulator],
) -> None:
    def answers(codeless: float) -> list[tuple[int, bool]]:
        emu = emulator_factory(error_rate=0.5, codeless_error_rate=codeless, seed=3)
        url = f"{emu.base_url}/accounts/acct/ai/run/{SMALL}"
        out = []
        with httpx.Client(headers=AUTH) as client:
            for _ in range(24):
                response = client.post(url, json={"text": "x"})
                errors = response.json()["errors"]
                out.append((response.status_code, bool(errors) and "code" in errors[0]))
        return out

    coded, mixed = answers(0.0), answers(0.5)
    assert [status for status, _ in coded] == [status for status, _ in mixed]
    failed = [has_code for status, has_code in mixed if status >= 500]
    assert True in failed and False in failed
    assert all(has_code for status, has_code in coded if status >= 500)
