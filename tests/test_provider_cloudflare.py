"""CloudflareProvider over an httpx.MockTransport: URLs, headers, bodies, errors, batch, usage."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jsonschema
import pytest

from pipelines.catalog.models import get_model
from pipelines.core.errors import (
    AuthenticationFailed,
    DailyNeuronsExhausted,
    InvalidInput,
    JobError,
    ProviderError,
    RateLimited,
    ServerError,
    TransportError,
    UnknownModel,
)
from pipelines.providers import CloudflareProvider, ProviderSettings, RetryPolicy, with_retries

T = TypeVar("T")

TOKEN = "tok-SECRET-0123456789abcdef"
ACCOUNT = "acct123"
BASE = "https://api.example.test/client/v4"
SETTINGS = ProviderSettings(base_url=BASE, account_id=ACCOUNT, token=TOKEN)
BGE = get_model("@cf/baai/bge-base-en-v1.5")
WHISPER = get_model("@cf/openai/whisper")
TURBO = get_model("@cf/openai/whisper-large-v3-turbo")
M2M = get_model("@cf/meta/m2m100-1.2b")
DISTILBERT = get_model("@cf/huggingface/distilbert-sst-2-int8")
AUDIO = b"RIFF\x00\x00\x00\x00WAVE" + bytes(range(200))

Handler = Callable[[httpx.Request], httpx.Response]


def ok(result: Any) -> httpx.Response:
    return httpx.Response(
        200, json={"result": result, "success": True, "errors": [], "messages": []}
    )


def fail(status: int, code: int | None, message: str, **kw: Any) -> httpx.Response:
    errors = [{"code": code, "message": message}] if code is not None else []
    body = {"result": None, "success": False, "errors": errors, "messages": []}
    return httpx.Response(status, json=body, **kw)


class Recorder:
    """A MockTransport handler that records requests and answers from a script."""

    def __init__(self, *answers: httpx.Response | Exception | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return answer(request)


def call(
    rec: Recorder,
    fn: Callable[[CloudflareProvider], Awaitable[T]],
    settings: ProviderSettings = SETTINGS,
) -> T:
    async def go() -> T:
        async with CloudflareProvider(settings, transport=httpx.MockTransport(rec)) as provider:
            assert isinstance(provider, CloudflareProvider)
            return await fn(provider)

    return asyncio.run(go())


def test_run_posts_json_to_the_model_url_and_unwraps_result() -> None:
    rec = Recorder(ok({"shape": [1, 768], "data": [[0.1] * 768], "pooling": "mean"}))
    result = call(rec, lambda p: p.run(BGE, {"text": ["hello"]}))
    assert result["shape"] == [1, 768]
    (req,) = rec.requests
    assert req.method == "POST"
    assert str(req.url) == f"{BASE}/accounts/{ACCOUNT}/ai/run/@cf/baai/bge-base-en-v1.5"
    assert req.headers["authorization"] == f"Bearer {TOKEN}"
    assert req.headers["content-type"] == "application/json"
    assert json.loads(req.content) == {"text": ["hello"]}
    jsonschema.validate(json.loads(req.content), BGE.input_schema)


def test_whisper_sends_raw_audio_body() -> None:
    rec = Recorder(ok({"text": "hi", "word_count": 1}))
    assert call(rec, lambda p: p.run(WHISPER, {"audio": AUDIO}))["text"] == "hi"
    (req,) = rec.requests
    assert req.content == AUDIO
    assert req.headers["content-type"] == "application/octet-stream"
    assert req.url.path.endswith("/ai/run/@cf/openai/whisper")


def test_turbo_sends_base64_json() -> None:
    rec = Recorder(ok({"text": "hi", "transcription_info": {"duration": 1.0}}))
    call(rec, lambda p: p.run(TURBO, {"audio": AUDIO, "language": "en"}))
    sent = json.loads(rec.requests[0].content)
    assert base64.b64decode(sent["audio"]) == AUDIO
    assert sent["language"] == "en"
    jsonschema.validate(sent, TURBO.input_schema)


def test_gateway_base_url_puts_the_model_after_workers_ai() -> None:
    gateway = "https://gateway.ai.cloudflare.com/v1/acct123/my-gw/workers-ai"
    rec = Recorder(ok({"label": "POSITIVE", "score": 0.9}))
    settings = ProviderSettings(base_url=gateway, account_id=ACCOUNT, token=TOKEN)
    call(rec, lambda p: p.run(DISTILBERT, {"text": "great"}), settings)
    assert str(rec.requests[0].url) == f"{gateway}/@cf/huggingface/distilbert-sst-2-int8"


@pytest.mark.parametrize(
    "settings",
    [
        ProviderSettings(base_url=BASE, account_id="", token=TOKEN),
        ProviderSettings(base_url=BASE, account_id=ACCOUNT, token=""),
        ProviderSettings(base_url=BASE),
    ],
)
def test_missing_credentials_fail_before_any_request(settings: ProviderSettings) -> None:
    rec = Recorder(ok({}))
    with pytest.raises(AuthenticationFailed) as info:
        call(rec, lambda p: p.run(BGE, {"text": ["a"]}), settings)
    assert "CLOUDFLARE_ACCOUNT_ID" in info.value.message
    assert "CLOUDFLARE_API_TOKEN" in info.value.message
    assert "CLOUDFLARE_API_TOKEN_FILE" in info.value.message
    assert rec.requests == []


def test_bad_base_url_is_a_usage_error() -> None:
    with pytest.raises(JobError, match="http"):
        CloudflareProvider(
            ProviderSettings(base_url="api.cloudflare.com", account_id="a", token="t")
        )


@pytest.mark.parametrize(
    ("response", "kind", "code"),
    [
        (fail(429, 3021, "rate limiting", headers={"Retry-After": "3"}), RateLimited, 3021),
        (fail(429, 3036, "daily free allocation"), DailyNeuronsExhausted, 3036),
        (fail(400, 5006, "Bad input"), InvalidInput, 5006),
        (fail(400, 5007, "No such model"), UnknownModel, 5007),
        (fail(401, 10000, "Authentication error"), AuthenticationFailed, 10000),
        (httpx.Response(502, text="<html>bad gateway</html>"), ServerError, None),
        (httpx.Response(200, text="not json"), TransportError, None),
        (httpx.Response(200, json={"data": []}), TransportError, None),
    ],
)
def test_http_errors_become_typed_errors(
    response: httpx.Response, kind: type[ProviderError], code: int | None
) -> None:
    with pytest.raises(kind) as info:
        call(Recorder(response), lambda p: p.run(BGE, {"text": ["a"]}))
    assert info.value.code == code
    assert info.value.status == response.status_code
    if kind is RateLimited:
        assert info.value.retry_after == 3.0


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("timed out"),
        httpx.ConnectTimeout("timed out"),
        httpx.ConnectError("connection refused"),
        httpx.ReadError("connection reset by peer"),
        httpx.RemoteProtocolError("server disconnected without sending a response"),
    ],
)
def test_transport_failures_become_transport_errors(exc: Exception) -> None:
    with pytest.raises(TransportError) as info:
        call(Recorder(exc), lambda p: p.run(BGE, {"text": ["a"]}))
    assert info.value.__cause__ is exc
    assert info.value.retryable


def test_token_never_appears_in_errors_or_reprs() -> None:
    echo = fail(401, 10000, f"Authentication error for Bearer {TOKEN}")
    with pytest.raises(AuthenticationFailed) as info:
        call(Recorder(echo), lambda p: p.run(BGE, {"text": ["a"]}))
    err = info.value
    for text in (str(err), repr(err), err.message, repr(err.args), json.dumps(err.attrs())):
        assert TOKEN not in text
    provider = CloudflareProvider(SETTINGS)
    assert TOKEN not in repr(provider) and TOKEN not in repr(SETTINGS)
    asyncio.run(provider.aclose())

    for answer in (
        httpx.ConnectError("refused"),
        httpx.Response(500, text=f"upstream saw token {TOKEN}"),
        httpx.Response(200, text=f"garbage {TOKEN}"),
    ):
        with pytest.raises(ProviderError) as info2:
            call(Recorder(answer), lambda p: p.run(BGE, {"text": ["a"]}))
        assert TOKEN not in str(info2.value) and TOKEN not in repr(info2.value)


def test_token_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", ACCOUNT)
    rec = Recorder(ok({"label": "POSITIVE", "score": 0.9}))
    call(rec, lambda p: p.run(DISTILBERT, {"text": "ok"}), ProviderSettings.from_env(BASE))
    assert rec.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_with_retries_around_run_honours_retry_after() -> None:
    rec = Recorder(
        fail(429, 3021, "rate limited", headers={"Retry-After": "4"}),
        httpx.Response(503, text="busy"),
        ok({"label": "POSITIVE", "score": 0.9}),
    )
    slept: list[float] = []

    async def fake_sleep(s: float) -> None:
        slept.append(s)

    async def go(p: CloudflareProvider) -> Any:
        return await with_retries(
            lambda: p.run(DISTILBERT, {"text": "ok"}), RetryPolicy(), sleep=fake_sleep
        )

    assert call(rec, go) == {"label": "POSITIVE", "score": 0.9}
    assert len(rec.requests) == 3
    assert slept[0] >= 4.0 and len(slept) == 2


# --------------------------------------------------------------------------- batch


def test_submit_batch_posts_queue_request() -> None:
    rec = Recorder(ok({"status": "queued", "request_id": "req-1", "model": BGE.id}))
    requests: list[dict[str, Any]] = [{"text": ["a", "b"]}, {"text": ["c"], "pooling": "cls"}]
    assert call(rec, lambda p: p.submit_batch(BGE, requests)) == "req-1"
    (req,) = rec.requests
    assert req.url.params["queueRequest"] == "true"
    assert req.url.path == f"/client/v4/accounts/{ACCOUNT}/ai/run/@cf/baai/bge-base-en-v1.5"
    sent = json.loads(req.content)
    assert sent == {"requests": requests}
    jsonschema.validate(sent, BGE.input_schema)


def test_submit_batch_encodes_turbo_audio_and_checks_items() -> None:
    rec = Recorder(ok({"status": "queued", "request_id": "req-2"}))
    call(rec, lambda p: p.submit_batch(TURBO, [{"audio": AUDIO}, {"audio": AUDIO[:10]}]))
    items = json.loads(rec.requests[0].content)["requests"]
    assert [base64.b64decode(i["audio"]) for i in items] == [AUDIO, AUDIO[:10]]
    for item in items:
        jsonschema.validate(item, TURBO.input_schema)


def test_submit_batch_refusals() -> None:
    rec = Recorder(ok({"status": "queued", "request_id": "x"}))
    with pytest.raises(InvalidInput, match="Batch API"):
        call(rec, lambda p: p.submit_batch(DISTILBERT, [{"text": "a"}]))
    with pytest.raises(InvalidInput, match="10 MB"):
        call(rec, lambda p: p.submit_batch(BGE, [{"text": ["x" * 1000] * 100}] * 120))
    assert rec.requests == []
    with pytest.raises(TransportError, match="request_id"):
        call(Recorder(ok({"status": "queued"})), lambda p: p.submit_batch(M2M, [{"text": "a"}]))


def test_poll_batch_pending_then_done() -> None:
    done = {
        "responses": [
            {"id": 1, "result": {"translated_text": "b"}, "success": True},
            {"id": 0, "result": {"translated_text": "a"}, "success": True},
        ],
        "usage": {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8},
    }
    rec = Recorder(
        ok({"status": "queued", "request_id": "r"}),
        ok({"status": "running", "request_id": "r"}),
        ok(done),
        httpx.Response(200, json=done),  # the finished answer without an envelope
    )

    async def go(p: CloudflareProvider) -> list[dict[str, Any] | None]:
        return [await p.poll_batch(M2M, "r") for _ in range(4)]

    assert call(rec, go) == [None, None, done, done]
    for req in rec.requests:
        assert json.loads(req.content) == {"request_id": "r"}
        assert req.url.params["queueRequest"] == "true"


def test_poll_batch_errors() -> None:
    with pytest.raises(TransportError):
        call(Recorder(ok({"status": "weird"})), lambda p: p.poll_batch(M2M, "r"))
    with pytest.raises(DailyNeuronsExhausted):
        call(Recorder(fail(429, 4006, "daily free allocation")), lambda p: p.poll_batch(M2M, "r"))


# --------------------------------------------------------------------------- usage


def test_fetch_usage_sums_neurons_per_model() -> None:
    answer = httpx.Response(
        200,
        json={
            "data": {
                "viewer": {
                    "accounts": [
                        {
                            "aiInferenceAdaptiveGroups": [
                                {"dimensions": {"modelId": BGE.id}, "sum": {"totalNeurons": 12.5}},
                                {"dimensions": {"modelId": M2M.id}, "sum": {"totalNeurons": 100}},
                                {"dimensions": {"modelId": BGE.id}, "sum": {"totalNeurons": 0.5}},
                            ]
                        }
                    ]
                }
            },
            "errors": None,
        },
    )
    rec = Recorder(answer)
    assert call(rec, lambda p: p.fetch_usage("2026-09-01")) == {BGE.id: 13.0, M2M.id: 100.0}
    (req,) = rec.requests
    assert str(req.url) == f"{BASE}/graphql"
    assert req.headers["authorization"] == f"Bearer {TOKEN}"
    sent = json.loads(req.content)
    assert sent["variables"] == {"acct": ACCOUNT, "date": "2026-09-01"}
    for needle in ("aiInferenceAdaptiveGroups", "accountTag: $acct", "totalNeurons", "modelId"):
        assert needle in sent["query"]


def test_fetch_usage_errors() -> None:
    denied = httpx.Response(
        200, json={"data": None, "errors": [{"message": "not authorized for that account"}]}
    )
    with pytest.raises(AuthenticationFailed, match="Account Analytics Read"):
        call(Recorder(denied), lambda p: p.fetch_usage("2026-09-01"))
    empty = httpx.Response(200, json={"data": {"viewer": {"accounts": []}}, "errors": None})
    assert call(Recorder(empty), lambda p: p.fetch_usage("2026-09-01")) == {}
    with pytest.raises(TransportError):
        call(Recorder(httpx.Response(200, text="nope")), lambda p: p.fetch_usage("2026-09-01"))
    with pytest.raises(ServerError):
        call(Recorder(httpx.Response(503)), lambda p: p.fetch_usage("2026-09-01"))
    with pytest.raises(ValueError):
        call(Recorder(empty), lambda p: p.fetch_usage("yesterday"))
