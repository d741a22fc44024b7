"""``/ai/v1/chat/completions`` against the official ``openai`` SDK: every text model answers
a plain ``chat.completion`` (no Cloudflare envelope), JSON mode is taken in OpenAI's form
whatever the model's own, and errors come in Cloudflare's envelope as on ``/v1/embeddings``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest

from pipelines.catalog.chat import completion_tokens, prompt_tokens
from pipelines.catalog.models import ModelInfo, get_model
from pipelines.emulator import RunningEmulator

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.emulator(plan="paid")

CLASSIC = get_model("@cf/meta/llama-3.3-70b-instruct-fp8-fast")
GUIDED = get_model("@cf/mistralai/mistral-small-3.1-24b-instruct")
QWEN = get_model("@cf/qwen/qwen3-30b-a3b-fp8")
GPT_OSS = get_model("@cf/openai/gpt-oss-20b")
NO_JSON = get_model("@cf/meta/llama-3.2-3b-instruct")
ASK = [{"role": "user", "content": "List three facts about the moon."}]
SCHEMA = {
    "type": "object",
    "properties": {
        "facts": {"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 3},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "topic": {"enum": ["moon", "sun"]},
    },
    "required": ["facts", "confidence", "topic"],
    "additionalProperties": False,
}
TOKEN = "sdk-token"


@pytest.fixture
def sdk(emu: RunningEmulator) -> Iterator[Any]:
    client = openai.OpenAI(
        base_url=f"{emu.base_url}/accounts/acct/ai/v1", api_key=TOKEN, max_retries=0
    )
    yield client
    client.close()


def native(emu: RunningEmulator, model: ModelInfo, body: dict[str, Any]) -> Any:
    """The same question asked on ``/ai/run`` (the model's own form)."""
    response = httpx.post(
        f"{emu.base_url}/accounts/acct/ai/run/{model.id}",
        json=body,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 200, response.text
    return response.json()["result"]


@pytest.mark.parametrize("model", [CLASSIC, GUIDED, QWEN, GPT_OSS], ids=lambda m: m.short_name)
def test_the_sdk_gets_a_chat_completion_from_every_form(
    emu: RunningEmulator, sdk: Any, model: ModelInfo
) -> None:
    done = sdk.chat.completions.create(model=model.id, messages=ASK, max_tokens=1000, seed=3)
    assert done.object == "chat.completion" and done.model == model.id
    (choice,) = done.choices
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    text = choice.message.content
    assert done.usage.prompt_tokens == prompt_tokens(model, ASK)
    assert done.usage.completion_tokens == completion_tokens(model, text)
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    # the same answer as the model's own endpoint gives
    own = native(emu, model, {"messages": ASK, "max_tokens": 1000, "seed": 3})
    own_text = own["response"] if "response" in own else own["choices"][0]["message"]["content"]
    assert own_text == text
    assert emu.stats()["models"][model.id]["requests"] == 2  # both billed


@pytest.mark.parametrize("model", [CLASSIC, GUIDED, QWEN, GPT_OSS], ids=lambda m: m.short_name)
def test_the_sdk_json_schema_mode_works_for_every_json_form(sdk: Any, model: ModelInfo) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "f", "schema": SCHEMA, "strict": True}}
    for seed in (1, 2, 3):
        done = sdk.chat.completions.create(
            model=model.id, messages=ASK, response_format=fmt, seed=seed, max_tokens=500
        )
        jsonschema.validate(json.loads(done.choices[0].message.content), SCHEMA)
    as_object = sdk.chat.completions.create(
        model=model.id, messages=ASK, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(as_object.choices[0].message.content), dict)


def test_max_completion_tokens_and_max_tokens_cut_the_answer(sdk: Any) -> None:
    for model in (CLASSIC, QWEN):
        whole = sdk.chat.completions.create(model=model.id, messages=ASK, max_tokens=1000)
        for kwargs in ({"max_tokens": 7}, {"max_completion_tokens": 7}):
            cut = sdk.chat.completions.create(model=model.id, messages=ASK, **kwargs)
            assert cut.choices[0].finish_reason == "length"
            assert cut.usage.completion_tokens <= 7
            assert whole.choices[0].message.content.startswith(cut.choices[0].message.content)


def test_the_answer_is_not_wrapped_in_cloudflares_envelope(emu: RunningEmulator) -> None:
    response = httpx.post(
        f"{emu.base_url}/accounts/acct/ai/v1/chat/completions",
        json={"model": CLASSIC.id, "messages": ASK},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 200
    body = response.json()
    assert "success" not in body and "result" not in body
    assert body["object"] == "chat.completion"


def test_errors_reach_the_sdk_with_cloudflares_codes(emu: RunningEmulator, sdk: Any) -> None:
    cases: list[tuple[dict[str, Any], type[Exception], int]] = [
        ({"model": "@cf/nobody/nothing", "messages": ASK}, openai.BadRequestError, 5007),
        ({"model": "@cf/baai/bge-small-en-v1.5", "messages": ASK}, openai.BadRequestError, 5006),
        (
            {"model": NO_JSON.id, "messages": ASK, "response_format": {"type": "json_object"}},
            openai.BadRequestError,
            5006,
        ),
        ({"model": QWEN.id, "messages": []}, openai.BadRequestError, 5006),  # minItems 1
    ]
    for kwargs, error, code in cases:
        with pytest.raises(error) as caught:
            sdk.chat.completions.create(**kwargs)
        assert caught.value.body is not None
        assert caught.value.response.json()["errors"][0]["code"] == code, kwargs
    emu.config.plan = "free"
    with pytest.raises(openai.PermissionDeniedError) as denied:
        sdk.chat.completions.create(model="@cf/moonshotai/kimi-k2.6", messages=ASK)
    assert denied.value.response.json()["errors"][0]["code"] == 5035
    emu.config.plan = "paid"
    emu.config.json_failure_rate = 1.0
    with pytest.raises(openai.BadRequestError) as unmet:
        sdk.chat.completions.create(
            model=QWEN.id, messages=ASK, response_format={"type": "json_object"}
        )
    assert unmet.value.response.json()["errors"][0] == {
        "code": 5024,
        "message": "JSON Mode couldn't be met",
    }
    missing = httpx.post(
        f"{emu.base_url}/accounts/acct/ai/v1/chat/completions",
        json={"model": QWEN.id},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert missing.status_code == 400 and missing.json()["errors"][0]["code"] == 5006
    assert emu.stats()["models"] == {}  # nothing refused was billed
