"""The ``openai`` provider (pipelines.providers.openai, openai_wire): what it sends is what the
official ``openai`` SDK sends for the same call, what it reads is what the SDK reads, against
the emulator's ``/ai/v1`` endpoints; answers come back in the shape each family reads
(vectors by ``index``, never by position), and refusals map to the typed errors Cloudflare's
do, with the key masked even where a server echoes it."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipelines.catalog.external import external_model
from pipelines.catalog.models import ModelInfo, get_model
from pipelines.core.errors import (
    AuthenticationFailed,
    CredentialsError,
    DailyNeuronsExhausted,
    InvalidInput,
    PaidPlanRequired,
    ProviderError,
    RateLimited,
    ServerError,
    TransportError,
    UnknownModel,
)
from pipelines.core.secrets import read_openai_key, secret_values
from pipelines.emulator import RunningEmulator
from pipelines.providers.base import OpenAISettings
from pipelines.providers.openai import OpenAIProvider
from pipelines.providers.openai_wire import (
    chat_body,
    cloudflare_account,
    embeddings_result,
    openai_error,
    result_for,
)
from pipelines.tasks.generate import json_mode_body
from pipelines.tasks.generated import read_answer

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.emulator(plan="paid")

KEY = "sk-proj-Very5ecretKeyValue-0123456789"
BGE = get_model("@cf/baai/bge-small-en-v1.5")
CLASSIC = get_model("@cf/meta/llama-3.1-8b-instruct-fp8")  # messages form, classic JSON mode
GUIDED = get_model("@cf/mistralai/mistral-small-3.1-24b-instruct")  # messages, guided_json
QWEN = get_model("@cf/qwen/qwen3-30b-a3b-fp8")  # chat form, OpenAI JSON mode
GPT_OSS = get_model("@cf/openai/gpt-oss-20b")  # chat form, classic JSON mode
ASK = [{"role": "user", "content": "Three facts about the moon."}]
SCHEMA = {
    "type": "object",
    "properties": {"facts": {"type": "array", "items": {"type": "string"}}},
    "required": ["facts"],
    "additionalProperties": False,
}
TEXTS = ["the moon is bright", "rivers run to the sea", "the moon is bright again"]


class Recorder(httpx.AsyncBaseTransport):
    """Forwards to the network and keeps every request body and answer (our provider)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.bodies: list[dict[str, Any]] = []
        self.answers: list[Any] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(await request.aread()))
        response = await self.inner.handle_async_request(request)
        content = await response.aread()
        await response.aclose()
        self.answers.append(json.loads(content) if content else None)
        return httpx.Response(response.status_code, headers=response.headers, content=content)

    async def aclose(self) -> None:
        await self.inner.aclose()


class SyncRecorder(httpx.BaseTransport):
    """The same for the SDK's (synchronous) client."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.bodies: list[dict[str, Any]] = []
        self.answers: list[Any] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.read()))
        response = self.inner.handle_request(request)
        content = response.read()
        response.close()
        self.answers.append(json.loads(content))
        return httpx.Response(response.status_code, headers=response.headers, content=content)

    def close(self) -> None:
        self.inner.close()


def v1(emu: RunningEmulator) -> str:
    return f"{emu.base_url}/accounts/acct/ai/v1"


@pytest.fixture
def sdk(emu: RunningEmulator) -> Iterator[tuple[Any, SyncRecorder]]:
    recorder = SyncRecorder()
    client = openai.OpenAI(
        base_url=v1(emu),
        api_key=KEY,
        max_retries=0,
        http_client=httpx.Client(transport=recorder),
    )
    yield client, recorder
    client.close()


def ours(base: str, model: ModelInfo, inputs: dict[str, Any]) -> tuple[Any, Recorder]:
    """Our provider's answer to one call, and what went over the wire."""
    recorder = Recorder()

    async def go() -> Any:
        settings = OpenAISettings(base_url=base, key=KEY)
        async with OpenAIProvider(settings, transport=recorder) as provider:
            return await provider.run(model, inputs)

    return asyncio.run(go()), recorder


# -- against the emulator and the SDK ------------------------------------------------------


def test_an_embeddings_call_is_the_sdks_and_reads_as_workers_ai(
    emu: RunningEmulator, sdk: tuple[Any, SyncRecorder]
) -> None:
    client, seen = sdk
    got, sent = ours(v1(emu), BGE, {"text": TEXTS})
    done = client.embeddings.create(model=BGE.id, input=TEXTS, encoding_format="float")
    assert sent.bodies == seen.bodies  # byte for byte what the SDK sends, as JSON
    assert got["shape"] == [3, 384] and len(got["data"]) == 3
    assert got["data"] == [item.embedding for item in done.data]  # what the SDK read
    assert got["usage"]["prompt_tokens"] == done.usage.prompt_tokens
    # the vectors are the model's own: the same as /ai/run answers
    native = httpx.post(
        f"{emu.base_url}/accounts/acct/ai/run/{BGE.id}",
        json={"text": TEXTS},
        headers={"Authorization": f"Bearer {KEY}"},
    ).json()["result"]
    assert got["data"] == native["data"]
    # and what the SDK parsed, read by our translation, is the same answer
    parsed = done.model_dump(exclude_unset=True)
    assert embeddings_result(BGE, parsed) == got


@pytest.mark.parametrize("model", [CLASSIC, GUIDED, QWEN, GPT_OSS], ids=lambda m: m.short_name)
def test_a_chat_call_is_the_sdks_whatever_the_models_json_form(
    emu: RunningEmulator, sdk: tuple[Any, SyncRecorder], model: ModelInfo
) -> None:
    client, seen = sdk
    # what the generate family builds: the model's native JSON-mode field
    inputs = {"messages": ASK, "seed": 7, "temperature": 0.2, "max_tokens": 200}
    inputs.update(json_mode_body(model, SCHEMA))
    got, sent = ours(v1(emu), model, inputs)
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": SCHEMA, "strict": True},
    }
    done = client.chat.completions.create(
        model=model.id, messages=ASK, seed=7, temperature=0.2, max_tokens=200, response_format=fmt
    )
    assert sent.bodies == seen.bodies  # our body is the SDK's for the same arguments
    answer = read_answer(model, got, SCHEMA, 200)
    assert answer.text == done.choices[0].message.content
    assert answer.value == json.loads(done.choices[0].message.content)
    assert answer.finish_reason == done.choices[0].finish_reason == "stop"
    assert answer.prompt_tokens == done.usage.prompt_tokens
    assert answer.completion_tokens == done.usage.completion_tokens
    # the SDK's parsed completion, through our translation, reads the same
    again = read_answer(model, result_for(model, done.model_dump()), SCHEMA, 200)
    assert (again.text, again.value, again.truncated) == (answer.text, answer.value, False)
    if model.request_form == "messages":
        assert set(got) == {"response", "usage", "finish_reason"}  # Cloudflare's shape
    else:
        assert got["object"] == "chat.completion"


def test_an_answer_cut_at_max_tokens_reads_as_truncated(emu: RunningEmulator) -> None:
    for model in (CLASSIC, QWEN):
        got, _ = ours(v1(emu), model, {"messages": ASK, "max_tokens": 5})
        answer = read_answer(model, got, None, 5)
        assert answer.truncated and answer.finish_reason == "length"
        assert answer.completion_tokens is not None and answer.completion_tokens <= 5


def test_refusals_from_the_emulator_are_typed(emu: RunningEmulator) -> None:
    with pytest.raises(UnknownModel) as unknown:
        ours(v1(emu), external_model("@cf/nobody/nothing", "embed", "tokens"), {"text": ["x"]})
    assert "has no model @cf/nobody/nothing" in unknown.value.message
    emu.config.token = "another-key"
    with pytest.raises(AuthenticationFailed) as refused:
        ours(v1(emu), BGE, {"text": ["x"]})
    assert "OPENAI_API_KEY" in refused.value.message and KEY not in refused.value.message
    emu.config.token = None
    emu.config.daily_neurons = 1e-9
    ours(v1(emu), BGE, {"text": ["served in full while under the cap"]})
    with pytest.raises(DailyNeuronsExhausted):
        ours(v1(emu), BGE, {"text": ["now over it"]})
    with pytest.raises(UnknownModel):  # a wrong base URL: the emulator's 404 / 7000
        ours(f"{emu.base_url}/accounts/acct/ai", BGE, {"text": ["x"]})


# -- the wire, without a network -----------------------------------------------------------


def test_vectors_are_ordered_by_index_never_by_position() -> None:
    packed = base64.b64encode(struct.pack("<2f", 0.5, -1.0)).decode()
    data = {
        "data": [
            {"object": "embedding", "index": 2, "embedding": [2.0, 2.0]},
            {"object": "embedding", "index": 0, "embedding": packed},  # base64, as some send
            {"object": "embedding", "index": 1, "embedding": [1.0, 1.0]},
        ],
        "usage": {"prompt_tokens": 9, "total_tokens": 9},
    }
    assert embeddings_result(BGE, data) == {
        "shape": [3, 2],
        "data": [[0.5, -1.0], [1.0, 1.0], [2.0, 2.0]],
        "usage": {"prompt_tokens": 9, "total_tokens": 9},
    }
    for bad in ([0, 0, 1], [0, 1, 3], [0, 1, None], [0, 1, True]):
        broken = {"data": [{"index": i, "embedding": [1.0]} for i in bad]}
        with pytest.raises(TransportError):
            embeddings_result(BGE, broken)


def test_each_json_form_becomes_openais() -> None:
    openai_form = {"name": "output", "schema": SCHEMA, "strict": True}
    for model in (CLASSIC, GUIDED, QWEN, GPT_OSS):
        body = chat_body(model, {"messages": ASK, **json_mode_body(model, SCHEMA)})
        assert body["response_format"] == {"type": "json_schema", "json_schema": openai_form}
        assert "guided_json" not in body and body["model"] == model.id
    plain = chat_body(CLASSIC, {"messages": ASK, "max_tokens": 3})
    assert plain == {"model": CLASSIC.id, "messages": ASK, "max_tokens": 3}


def error(status: int, body: Any, headers: dict[str, str] | None = None) -> ProviderError:
    raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
    return openai_error(status, headers or {}, raw, model="gpt-4o-mini", server="the server")


def oai(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def test_openai_errors_map_to_the_typed_errors() -> None:
    bad_key = error(
        401, oai("Incorrect API key provided", "invalid_request_error", "invalid_api_key")
    )
    assert isinstance(bad_key, AuthenticationFailed) and "OPENAI_API_KEY" in bad_key.message
    assert isinstance(error(403, oai("no", "permission_error")), AuthenticationFailed)
    gone = error(404, oai("The model does not exist", "invalid_request_error", "model_not_found"))
    assert isinstance(gone, UnknownModel)
    assert isinstance(
        error(400, oai("nope", "invalid_request_error", "model_not_found")), UnknownModel
    )
    limited = error(
        429, oai("Rate limit reached", "requests", "rate_limit_exceeded"), {"retry-after": "7"}
    )
    assert isinstance(limited, RateLimited) and limited.retry_after == 7.0
    broke = error(
        429, oai("You exceeded your current quota", "insufficient_quota", "insufficient_quota")
    )
    assert isinstance(broke, PaidPlanRequired)  # no retry can help: the run stops
    for status in (500, 502, 503):
        assert isinstance(error(status, oai("server had an error", "server_error")), ServerError)
    assert isinstance(
        error(400, oai("context length exceeded", "invalid_request_error")), InvalidInput
    )
    assert isinstance(error(422, b"unprocessable"), InvalidInput)
    # Workers AI behind the endpoint keeps Cloudflare's codes
    daily = error(429, {"errors": [{"code": 4006, "message": "daily free allocation"}]})
    assert isinstance(daily, DailyNeuronsExhausted)


def test_an_echoed_key_never_leaves_the_provider() -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        said = request.headers["authorization"]
        return httpx.Response(400, json=oai(f"bad request from {said} ({said!r})", "invalid"))

    async def go() -> ProviderError:
        settings = OpenAISettings(base_url="http://server.test/v1", key=KEY)
        transport = httpx.MockTransport(echo)
        async with OpenAIProvider(settings, transport=transport) as provider:
            with pytest.raises(InvalidInput) as caught:
                await provider.run(BGE, {"text": ["x"]})
            return caught.value

    caught = asyncio.run(go())
    assert KEY not in caught.message and "***" in caught.message
    assert KEY[4:-4] not in str(caught.args)


def test_the_cloudflare_account_comes_from_the_url() -> None:
    api = "https://api.cloudflare.com/client/v4/accounts/abc123/ai/v1"
    gateway = "https://gateway.ai.cloudflare.com/v1/abc123/my-gw/workers-ai/v1"
    assert cloudflare_account(api) == cloudflare_account(gateway) == "abc123"
    assert cloudflare_account("https://llm.example/v1", {"CLOUDFLARE_ACCOUNT_ID": "x"}) == "x"
    assert cloudflare_account("https://llm.example/v1", {}) == "default"


def test_settings_never_show_the_key() -> None:
    settings = OpenAISettings(base_url="http://server.test/v1", key=KEY)
    assert KEY not in repr(settings) and KEY not in repr(OpenAIProvider(settings))


def test_the_key_is_read_and_checked_like_the_cloudflare_token(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(f"  {KEY}\n")
    assert read_openai_key({"OPENAI_API_KEY": f" {KEY} "}) == KEY
    assert read_openai_key({"OPENAI_API_KEY_FILE": str(key_file)}) == KEY  # trimmed
    assert read_openai_key({}) == ""
    for content in ("two words", "é-key", ""):
        key_file.write_text(content)
        with pytest.raises(CredentialsError) as bad:
            read_openai_key({"OPENAI_API_KEY_FILE": str(key_file)})
        assert "OPENAI_API_KEY_FILE" in bad.value.message
        assert not content or content not in bad.value.message
    key_file.write_bytes(b"k" * (64 * 1024 + 1))
    with pytest.raises(CredentialsError, match="too large"):
        read_openai_key({"OPENAI_API_KEY_FILE": str(key_file)})
    key_file.write_text(KEY + "\n")
    found = secret_values({"OPENAI_API_KEY": "sk-env-value", "OPENAI_API_KEY_FILE": str(key_file)})
    assert {"sk-env-value", KEY} <= set(found)
