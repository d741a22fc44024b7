"""The emulator's text-generation models: each model's own request form and answer shape,
determinism, ``max_tokens``, JSON mode in each form and its failures, metering, the paid
plan, the Batch API and the OpenAI-compatible ``/ai/v1/chat/completions``."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import pytest

from pipelines.catalog.chat import completion_tokens, prompt_tokens
from pipelines.catalog.metering import Usage, neurons
from pipelines.catalog.models import ModelInfo, get_model, list_models
from pipelines.emulator import FakeClock, RunningEmulator, json_values

pytestmark = pytest.mark.emulator(plan="paid", batch_delay_s=30)

GENERATE = [m for m in list_models() if m.task == "generate"]
CLASSIC = get_model("@cf/meta/llama-3.3-70b-instruct-fp8-fast")  # response_format, Batch API
GUIDED = get_model("@cf/mistralai/mistral-small-3.1-24b-instruct")  # guided_json
QWEN = get_model("@cf/qwen/qwen3-30b-a3b-fp8")  # chat form, OpenAI JSON form, Batch API
GPT_OSS = get_model("@cf/openai/gpt-oss-120b")  # chat form, classic JSON form, both inputs
NO_JSON = get_model("@cf/meta/llama-3.2-1b-instruct")  # no JSON mode, no Batch API
KIMI = get_model("@cf/moonshotai/kimi-k2.6")  # paid only, 20 requests a minute
ASK = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Why is the sky blue?"},
]

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2, "maxLength": 40},
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "mood": {"enum": ["happy", "sad", "calm"]},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 4},
        "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "address": {"$ref": "#/$defs/address"},
        "nickname": {"type": ["string", "null"]},
        "verified": {"type": "boolean"},
        "contact": {"anyOf": [{"type": "string", "format": "email"}, {"type": "null"}]},
    },
    "required": ["name", "age", "mood", "tags", "address", "verified"],
    "additionalProperties": False,
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "integer"}},
            "required": ["city", "zip"],
        }
    },
}


def output_errors(model: ModelInfo, output: Any) -> list[str]:
    """Schema errors, tolerating only the published schemas' overlapping ``oneOf`` branches
    (an "Async response" branch with no required fields matches every object)."""
    validator = jsonschema.Draft202012Validator(model.output_schema)
    return [
        e.message
        for e in validator.iter_errors(output)
        if not (e.validator == "oneOf" and "is valid under each of" in e.message)
    ]


def run(client: httpx.Client, model: ModelInfo, body: dict[str, Any]) -> Any:
    response = client.post(f"/run/{model.id}", json=body)
    assert response.status_code == 200, response.text
    envelope = response.json()
    assert envelope["success"] is True and envelope["errors"] == [] and envelope["messages"] == []
    return envelope["result"]


def error_of(response: httpx.Response, status: int) -> tuple[int, str]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["result"] is None
    return body["errors"][0]["code"], body["errors"][0]["message"]


def text_of(model: ModelInfo, result: dict[str, Any]) -> tuple[str, str | None]:
    """The answer's text and finish reason (None for the classic shape, which has none)."""
    if "choices" in result:
        choice = result["choices"][0]
        return choice["message"]["content"], choice["finish_reason"]
    return result["response"], None


def json_body(model: ModelInfo, schema: dict[str, Any]) -> dict[str, Any]:
    """JSON mode in ``model``'s own form."""
    if model.json_mode == "guided_json":
        return {"guided_json": schema}
    if model.json_mode == "openai":
        wrapped = {"name": "answer", "schema": schema, "strict": True}
        return {"response_format": {"type": "json_schema", "json_schema": wrapped}}
    return {"response_format": {"type": "json_schema", "json_schema": schema}}


# -- shapes -----------------------------------------------------------------------------


@pytest.mark.parametrize("model", GENERATE, ids=lambda m: m.short_name)
def test_every_model_answers_in_its_own_schema_valid_shape(
    emu_client: httpx.Client, model: ModelInfo, fake_clock: FakeClock
) -> None:
    bodies: list[dict[str, Any]] = [
        {"messages": ASK, "max_tokens": 1000},
        {"messages": ASK, "max_tokens": 3},
    ]
    if model.request_form == "messages" or model.id.startswith("@cf/openai/"):
        bodies.append({"prompt": "Why is the sky blue?"})
    if model.json_mode != "none":
        bodies.append({"messages": ASK, **json_body(model, {"type": "object"})})
    for body in bodies:
        result = run(emu_client, model, body)
        text, finish = text_of(model, result)
        classic = model.request_form == "messages" or "prompt" in body
        if classic:
            assert set(result) == {"response", "usage"}, body
        else:
            assert result["object"] == "chat.completion" and result["model"] == model.id
            assert result["created"] == int(fake_clock.now().timestamp())
            assert result["choices"][0]["index"] == 0
            assert result["choices"][0]["message"]["role"] == "assistant"
            assert finish == ("length" if body.get("max_tokens") == 3 else "stop")
        sent = body.get("messages") or [{"role": "user", "content": body.get("prompt", "")}]
        # a classic JSON answer is billed as the compact JSON text the model wrote
        shown = text if isinstance(text, str) else json.dumps(text, separators=(",", ":"))
        assert result["usage"] == {
            "prompt_tokens": prompt_tokens(model, sent),
            "completion_tokens": completion_tokens(model, shown),
            "total_tokens": prompt_tokens(model, sent) + completion_tokens(model, shown),
        }
        if isinstance(text, str):  # a classic JSON answer is an object: see the test below
            assert output_errors(model, result) == [], (model.id, body)


def test_classic_json_answers_are_objects_unless_told_otherwise(
    emu: RunningEmulator, emu_client: httpx.Client
) -> None:
    # Cloudflare's JSON-mode docs show ``response`` as the parsed object, which its own
    # published output schema (``response: string``) does not allow; the knob gives both.
    body = {"prompt": "A person", **json_body(CLASSIC, PERSON)}
    value = run(emu_client, CLASSIC, body)["response"]
    assert isinstance(value, dict)
    jsonschema.validate(value, PERSON)
    emu.config.json_response = "string"
    as_text = run(emu_client, CLASSIC, body)
    assert json.loads(as_text["response"]) == value
    assert output_errors(CLASSIC, as_text) == []


def test_a_prompt_counts_as_one_user_message(emu_client: httpx.Client) -> None:
    for model in (CLASSIC, GPT_OSS):
        by_prompt = run(emu_client, model, {"prompt": "Name three rivers", "seed": 7})
        as_message = [{"role": "user", "content": "Name three rivers"}]
        by_messages = run(emu_client, model, {"messages": as_message, "seed": 7})
        assert by_prompt["usage"]["prompt_tokens"] == prompt_tokens(model, as_message)
        assert by_prompt["usage"] == by_messages["usage"]
        assert by_prompt["response"] == text_of(model, by_messages)[0]


def test_content_parts_are_read_as_their_text(emu_client: httpx.Client) -> None:
    parts = [{"type": "text", "text": "Why is the sky"}, {"type": "text", "text": "blue?"}]
    result = run(emu_client, GUIDED, {"messages": [{"role": "user", "content": parts}]})
    joined = [{"role": "user", "content": "Why is the sky\nblue?"}]
    assert result["usage"]["prompt_tokens"] == prompt_tokens(GUIDED, joined)


def test_bad_requests_are_refused_as_bad_input(emu_client: httpx.Client) -> None:
    cases: list[tuple[ModelInfo, dict[str, Any]]] = [
        (CLASSIC, {}),
        (CLASSIC, {"prompt": ""}),
        (CLASSIC, {"prompt": "hi", "messages": ASK}),  # both forms: oneOf refuses
        (QWEN, {"prompt": "hi"}),  # chat-completions models need messages
        (QWEN, {"messages": ASK, "max_tokens": 0}),
        (CLASSIC, {"prompt": "hi", "max_tokens": 0}),
        (CLASSIC, {"prompt": "hi", "stream": True}),  # the emulator does not stream
        (GPT_OSS, {"input": "hi"}),  # the Responses form is not emulated
        (CLASSIC, {"prompt": "word " * 30_000}),  # over the 24,000-token context window
    ]
    for model, body in cases:
        code, _ = error_of(emu_client.post(f"/run/{model.id}", json=body), 400)
        assert code == 5006, (model.id, list(body))


# -- determinism and max_tokens --------------------------------------------------------


def test_answers_are_deterministic_per_input_params_and_seed(
    emu: RunningEmulator, emu_client: httpx.Client
) -> None:
    for model in (CLASSIC, QWEN):
        first = run(emu_client, model, {"messages": ASK})
        assert run(emu_client, model, {"messages": ASK}) == first
        changed = [
            {"messages": ASK, "seed": 5},
            {"messages": ASK, "temperature": 0.1},
            {"messages": [*ASK[:1], {"role": "user", "content": "Why is grass green?"}]},
        ]
        for body in changed:
            assert text_of(model, run(emu_client, model, body))[0] != text_of(model, first)[0]
        seeded = run(emu_client, model, {"messages": ASK, "seed": 5})
        assert run(emu_client, model, {"messages": ASK, "seed": 5}) == seeded
    # without a seed in the request, the emulator's seed decides
    before = run(emu_client, CLASSIC, {"messages": ASK})
    emu.config.seed = 99
    assert run(emu_client, CLASSIC, {"messages": ASK}) != before


@pytest.mark.parametrize("model", GENERATE, ids=lambda m: m.short_name)
def test_max_tokens_cuts_the_answer_exactly(emu_client: httpx.Client, model: ModelInfo) -> None:
    whole = run(emu_client, model, {"messages": ASK, "max_tokens": 5000})
    full_text, finish = text_of(model, whole)
    assert finish in (None, "stop")
    assert 20 <= whole["usage"]["completion_tokens"] <= 600
    for limit in (3, 10, 25):
        key = "max_completion_tokens" if model.request_form == "chat" else "max_tokens"
        cut = run(emu_client, model, {"messages": ASK, key: limit})
        text, finish = text_of(model, cut)
        used = cut["usage"]["completion_tokens"]
        assert used == completion_tokens(model, text) <= limit
        assert full_text.startswith(text) and len(text) < len(full_text)  # a prefix
        assert finish in (None, "length")
        if model.tokenizer in ("llama3", "o200k-harmony", "tekken"):
            # no special token is counted in these completions: the cut lands on the limit
            assert used == limit, (model.id, limit)


def test_the_default_max_tokens_is_the_models(emu_client: httpx.Client) -> None:
    used = []
    for i in range(30):
        question = [{"role": "user", "content": f"Question number {i}?"}]
        result = run(emu_client, CLASSIC, {"messages": question})
        used.append(result["usage"]["completion_tokens"])
    assert CLASSIC.default_max_tokens == 256
    assert max(used) == 256  # some natural answers are longer and were cut there
    assert min(used) < 256


# -- JSON mode --------------------------------------------------------------------------


@pytest.mark.parametrize("model", [CLASSIC, GUIDED, QWEN, GPT_OSS], ids=lambda m: m.short_name)
def test_json_mode_answers_validate_against_the_schema(
    emu_client: httpx.Client, model: ModelInfo
) -> None:
    seen = set()
    for seed in range(1, 16):
        body = {"messages": ASK, "seed": seed, "max_tokens": 1000, **json_body(model, PERSON)}
        text, finish = text_of(model, run(emu_client, model, body))
        value = json.loads(text) if isinstance(text, str) else text
        assert isinstance(text, str) == (model.request_form == "chat")
        jsonschema.validate(value, PERSON)
        assert finish in (None, "stop")
        seen.add(json.dumps(value, sort_keys=True))
    assert len(seen) == 15  # the seed changes the value


def test_json_object_mode_answers_an_object(emu_client: httpx.Client) -> None:
    body = {"prompt": "Describe a cat", "response_format": {"type": "json_object"}}
    assert isinstance(run(emu_client, CLASSIC, body)["response"], dict)
    chat = {"messages": ASK, "response_format": {"type": "json_object"}}
    assert isinstance(json.loads(text_of(QWEN, run(emu_client, QWEN, chat))[0]), dict)


def test_json_cut_by_max_tokens_is_invalid_json(emu_client: httpx.Client) -> None:
    body = {"messages": ASK, "max_tokens": 6, **json_body(CLASSIC, PERSON)}
    result = run(emu_client, CLASSIC, body)
    assert isinstance(result["response"], str)  # not an object: the JSON did not finish
    assert result["usage"]["completion_tokens"] == 6
    with pytest.raises(ValueError):
        json.loads(result["response"])
    chat = run(emu_client, QWEN, {"messages": ASK, "max_tokens": 6, **json_body(QWEN, PERSON)})
    assert chat["choices"][0]["finish_reason"] == "length"
    with pytest.raises(ValueError):
        json.loads(chat["choices"][0]["message"]["content"])


def test_json_mode_in_another_form_or_on_a_model_without_it_is_refused(
    emu_client: httpx.Client,
) -> None:
    cases = [
        (NO_JSON, {"prompt": "hi", "response_format": {"type": "json_object"}}),
        (NO_JSON, {"prompt": "hi", "guided_json": PERSON}),
        (CLASSIC, {"prompt": "hi", "guided_json": PERSON}),
        (GUIDED, {"prompt": "hi", "response_format": {"type": "json_object"}}),
        (QWEN, {"messages": ASK, "response_format": {"type": "json_schema"}}),
        (CLASSIC, {"prompt": "hi", "response_format": {"type": "json_schema"}}),
        (CLASSIC, {"prompt": "hi", **json_body(CLASSIC, {"type": 5})}),  # not a schema
    ]
    for model, body in cases:
        code, _ = error_of(emu_client.post(f"/run/{model.id}", json=body), 400)
        assert code == 5006, (model.id, body)


@pytest.mark.emulator(plan="paid", json_failure_rate=1.0)
def test_json_mode_failure_is_an_unbilled_error(
    emu: RunningEmulator, emu_client: httpx.Client
) -> None:
    body = {"messages": ASK, **json_body(QWEN, PERSON)}
    code, message = error_of(emu_client.post(f"/run/{QWEN.id}", json=body), 400)
    assert (code, message) == (5024, "JSON Mode couldn't be met")
    assert emu.stats()["models"] == {}  # not billed
    run(emu_client, QWEN, {"messages": ASK})  # plain requests are not affected
    emu.config.json_failure_mode = "envelope-200"
    code, message = error_of(emu_client.post(f"/run/{QWEN.id}", json=body), 200)
    assert (code, message) == (5024, "JSON Mode couldn't be met")
    assert emu.stats()["models"][QWEN.id]["requests"] == 1


def test_json_failure_rate_is_decided_per_request(
    emu: RunningEmulator, emu_client: httpx.Client
) -> None:
    for bad in ({"json_failure_mode": "sometimes"}, {"plan": "gold"}, {"json_failure_rate": 2}):
        assert httpx.post(f"{emu.url}/__emulator/config", json=bad).status_code == 400
    knobs = httpx.post(f"{emu.url}/__emulator/config", json={"json_failure_rate": 0.5})
    assert knobs.status_code == 200 and knobs.json()["json_failure_rate"] == 0.5

    def outcomes() -> list[int]:
        return [
            emu_client.post(
                f"/run/{CLASSIC.id}",
                json={"prompt": f"item {i}", **json_body(CLASSIC, PERSON)},
            ).status_code
            for i in range(40)
        ]

    first = outcomes()
    assert 5 < first.count(400) < 35 and first.count(400) + first.count(200) == 40
    assert outcomes() == first  # the same requests fail again


def test_a_schema_the_generator_cannot_meet_fails_json_mode(emu_client: httpx.Client) -> None:
    schema = {"type": "object", "properties": {"id": {"type": "string", "pattern": "^[0-9]{8}$"}}}
    body = {"prompt": "hi", **json_body(CLASSIC, {**schema, "required": ["id"]})}
    code, _ = error_of(emu_client.post(f"/run/{CLASSIC.id}", json=body), 400)
    assert code == 5024


def test_a_remote_ref_is_never_fetched(
    emu_client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetched: list[Any] = []
    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: fetched.append(a))
    remote = {"$ref": "https://example.invalid/schema.json"}
    for schema in (remote, {"oneOf": [{"type": "string"}, remote]}):
        body = {"prompt": "hi", **json_body(CLASSIC, schema)}
        code, _ = error_of(emu_client.post(f"/run/{CLASSIC.id}", json=body), 400)
        assert code == 5024
    assert fetched == []


def test_json_validators_are_compiled_once_per_schema(emu_client: httpx.Client) -> None:
    schema = {**PERSON, "title": "compiled once"}
    before = json_values._compiled.cache_info()
    for i in range(5):
        run(emu_client, CLASSIC, {"prompt": f"p{i}", **json_body(CLASSIC, schema)})
    after = json_values._compiled.cache_info()
    assert after.misses - before.misses == 1 and after.hits - before.hits >= 4


# -- metering, limits, plan -------------------------------------------------------------


def test_usage_is_billed_at_catalog_prices(emu: RunningEmulator, emu_client: httpx.Client) -> None:
    results = [
        run(emu_client, CLASSIC, {"messages": ASK}),
        run(emu_client, CLASSIC, {"prompt": "Short?", "max_tokens": 4}),
    ]
    usage = [Usage(r["usage"]["prompt_tokens"], r["usage"]["completion_tokens"]) for r in results]
    entry = emu.stats()["models"][CLASSIC.id]
    assert entry["requests"] == 2
    assert entry["input_tokens"] == sum(u.input_tokens for u in usage)
    assert entry["output_tokens"] == sum(u.output_tokens for u in usage)
    assert entry["neurons"] == pytest.approx(sum(neurons(CLASSIC, u) for u in usage))
    query = """query($acct: string!, $date: Date!) { viewer { accounts(filter:
        {accountTag: $acct}) { aiInferenceAdaptiveGroups(limit: 10, filter: {date: $date})
        { dimensions { modelId } sum { totalNeurons } } } } }"""
    day = emu.stats()["day"]
    answer = httpx.post(
        f"{emu.base_url}/graphql",
        json={"query": query, "variables": {"acct": "acct", "date": day}},
        headers={"Authorization": "Bearer t"},
    ).json()
    (group,) = answer["data"]["viewer"]["accounts"][0]["aiInferenceAdaptiveGroups"]
    assert group["dimensions"]["modelId"] == CLASSIC.id
    assert group["sum"]["totalNeurons"] == pytest.approx(entry["neurons"])


@pytest.mark.emulator(plan="paid", daily_neurons=1.0)
def test_the_daily_cap_stops_text_models(emu: RunningEmulator, emu_client: httpx.Client) -> None:
    served = 0
    while True:
        response = emu_client.post(f"/run/{CLASSIC.id}", json={"messages": ASK})
        if response.status_code != 200:
            break
        served += 1
    assert served >= 1
    assert error_of(response, 429)[0] == 3036
    assert emu.stats()["neurons_today"] >= 1.0


def test_paid_only_models_have_their_own_minute_limit(
    emu_client: httpx.Client, fake_clock: FakeClock
) -> None:
    assert KIMI.rpm == 20
    for _ in range(20):
        run(emu_client, KIMI, {"messages": ASK, "max_tokens": 2})
    refused = emu_client.post(f"/run/{KIMI.id}", json={"messages": ASK})
    assert error_of(refused, 429)[0] == 3021 and refused.headers["Retry-After"] == "60"
    fake_clock.advance(60)
    run(emu_client, KIMI, {"messages": ASK, "max_tokens": 2})


@pytest.mark.emulator(plan="free")
def test_paid_only_models_are_refused_on_the_free_plan(
    emu: RunningEmulator, emu_client: httpx.Client
) -> None:
    for _ in range(25):  # more than its 20 a minute: a refusal takes no slot
        code, _ = error_of(emu_client.post(f"/run/{KIMI.id}", json={"messages": ASK}), 403)
        assert code == 5035
    body = {"model": KIMI.id, "messages": ASK}
    assert error_of(emu_client.post("/v1/chat/completions", json=body), 403)[0] == 5035
    assert emu.stats()["models"] == {} and emu.stats()["neurons_today"] == 0
    run(emu_client, CLASSIC, {"messages": ASK})  # free models still answer
    emu.config.plan = "paid"
    run(emu_client, KIMI, {"messages": ASK})


# -- Batch API --------------------------------------------------------------------------


def test_batch_api_serves_text_models(
    emu: RunningEmulator, emu_client: httpx.Client, fake_clock: FakeClock
) -> None:
    items: dict[ModelInfo, list[dict[str, Any]]] = {
        CLASSIC: [
            {"prompt": "Why is the sky blue?", "external_reference": "a"},
            {"messages": ASK, "max_tokens": 5, **json_body(CLASSIC, PERSON)},
            {"prompt": ""},  # fails alone
        ],
        QWEN: [{"messages": ASK}, {"messages": ASK, **json_body(QWEN, PERSON)}],
        GPT_OSS: [{"messages": ASK}, {"prompt": "Why is the sky blue?"}],
    }
    ids = {}
    for model, requests in items.items():
        queued = emu_client.post(
            f"/run/{model.id}?queueRequest=true", json={"requests": requests}
        ).json()["result"]
        ids[model] = queued["request_id"]
    fake_clock.advance(30)
    for model, requests in items.items():
        done = run(emu_client, model, {"request_id": ids[model]})
        served = [r for r in done["responses"] if r["success"]]
        for entry in served:
            sync = {k: v for k, v in requests[entry["id"]].items() if k != "external_reference"}
            assert entry["result"] == run(emu_client, model, sync)  # as a sync request
        total = [
            sum(r["result"]["usage"][k] for r in served)
            for k in ("prompt_tokens", "completion_tokens")
        ]
        assert [done["usage"]["prompt_tokens"], done["usage"]["completion_tokens"]] == total
    classic = run(emu_client, CLASSIC, {"request_id": ids[CLASSIC]})["responses"]
    assert classic[0]["external_reference"] == "a"
    assert classic[2]["success"] is False and classic[2]["errors"][0]["code"] == 5006
    refused = emu_client.post(
        f"/run/{NO_JSON.id}?queueRequest=true", json={"requests": [{"prompt": "hi"}]}
    )
    assert error_of(refused, 400)[0] == 5006  # no Batch API for this model
