"""Request bodies against Cloudflare's published schemas, and the error mapping table."""

from __future__ import annotations

import base64
import email.utils
import json
from typing import Any

import jsonschema
import pytest

from pipelines.catalog.models import get_model, list_models
from pipelines.core.errors import (
    AuthenticationFailed,
    CapacityExceeded,
    DailyNeuronsExhausted,
    InvalidInput,
    PaidPlanRequired,
    ProviderError,
    RateLimited,
    ServerError,
    TransportError,
    UnknownModel,
)
from pipelines.emulator.inputs import _batch_branch_required
from pipelines.providers.refusals import error_details, error_from_response, parse_retry_after
from pipelines.providers.wire import (
    BINARY_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    encode_run_body,
    json_inputs,
    unwrap_result,
)
from pipelines.tasks.generate import json_mode_body

AUDIO = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256))

# What the runner sends per model: every catalog model must appear here, so a new model
# cannot slip in without its requests being checked against its schema.
SAMPLE_INPUTS: dict[str, list[dict[str, Any]]] = {
    "@cf/baai/bge-small-en-v1.5": [{"text": ["a cat", "a dog"]}, {"text": ["x"], "pooling": "cls"}],
    "@cf/baai/bge-base-en-v1.5": [{"text": ["a cat"] * 100}, {"text": ["x"], "pooling": "mean"}],
    "@cf/baai/bge-large-en-v1.5": [{"text": ["ünïcödé ✓", "b"]}],
    "@cf/baai/bge-m3": [{"text": ["a", "b"]}, {"text": ["a"], "truncate_inputs": True}],
    "@cf/qwen/qwen3-embedding-0.6b": [
        {"text": ["a"] * 32},
        {"documents": ["d1", "d2"], "instruction": "Represent the passage"},
    ],
    "@cf/huggingface/distilbert-sst-2-int8": [{"text": "what a great film"}],
    "@cf/baai/bge-reranker-base": [{"query": "q", "contexts": [{"text": "a"}], "top_k": 1}],
    "@cf/meta/m2m100-1.2b": [
        {"text": "hello", "source_lang": "en", "target_lang": "fr"},
        {"text": "hello", "target_lang": "de"},
    ],
    "@cf/openai/whisper": [{"audio": AUDIO}],
    "@cf/openai/whisper-tiny-en": [{"audio": AUDIO}],
    "@cf/openai/whisper-large-v3-turbo": [
        {"audio": AUDIO},
        {"audio": AUDIO, "language": "de", "task": "translate", "vad_filter": True},
    ],
    # text-to-image: JSON bodies whatever the answer's form (base64 JSON or an image body)
    "@cf/black-forest-labs/flux-1-schnell": [{"prompt": "a cat"}, {"prompt": "a cat", "steps": 8}],
    "@cf/bytedance/stable-diffusion-xl-lightning": [
        {"prompt": "a cat", "negative_prompt": "dogs", "width": 512, "height": 768, "seed": 3}
    ],
    "@cf/stabilityai/stable-diffusion-xl-base-1.0": [{"prompt": "a cat", "num_steps": 20}],
    "@cf/lykon/dreamshaper-8-lcm": [{"prompt": "a cat", "guidance": 7.5, "seed": 0}],
    "@cf/leonardo/phoenix-1.0": [{"prompt": "a cat", "num_steps": 25, "width": 1024}],
    "@cf/leonardo/lucid-origin": [{"prompt": "a cat", "steps": 10, "seed": 1}],
}
# The generate family's requests (pipelines/tasks/generate.py): messages and max_tokens, and
# with an output schema the model's own JSON-mode field.
_SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
_CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
for _model in list_models():
    if _model.task == "generate":
        _plain = {"messages": _CHAT, "max_tokens": 64, "seed": 7, "temperature": 0}
        SAMPLE_INPUTS[_model.id] = [_plain]
        if _model.json_mode != "none":
            SAMPLE_INPUTS[_model.id].append({**_plain, **json_mode_body(_model, _SCHEMA)})


def test_every_catalog_model_has_sample_inputs() -> None:
    assert set(SAMPLE_INPUTS) == {m.id for m in list_models()}


@pytest.mark.parametrize(
    ("model_id", "inputs"),
    [(mid, inp) for mid, samples in SAMPLE_INPUTS.items() for inp in samples],
)
def test_request_body_matches_published_schema(model_id: str, inputs: dict[str, Any]) -> None:
    model = get_model(model_id)
    body, content_type = encode_run_body(model, inputs)
    if model.wire == "binary":
        assert content_type == BINARY_CONTENT_TYPE
        assert body == inputs["audio"]
        return
    assert content_type == JSON_CONTENT_TYPE
    sent = json.loads(body)
    # llama-3.3's Batch API branch requires nothing, so it matches every body; the
    # emulator's reading (that branch requires ``requests``) makes the oneOf decidable
    jsonschema.validate(sent, _batch_branch_required(model.input_schema))
    if model.wire == "base64":
        assert isinstance(sent["audio"], str)
        assert base64.b64decode(sent["audio"], validate=True) == inputs["audio"]
        assert {k: v for k, v in sent.items() if k != "audio"} == {
            k: v for k, v in inputs.items() if k != "audio"
        }
    else:
        assert sent == inputs


def test_published_schema_rejects_a_bad_body() -> None:
    # Guards the test above: the schemas really do constrain something.
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"text": ["a"] * 101}, get_model("@cf/baai/bge-base-en-v1.5").input_schema
        )
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"text": "hi"}, get_model("@cf/meta/m2m100-1.2b").input_schema)


@pytest.mark.parametrize("model_id", ["@cf/openai/whisper", "@cf/openai/whisper-tiny-en"])
def test_binary_models_refuse_options_and_missing_audio(model_id: str) -> None:
    model = get_model(model_id)
    with pytest.raises(InvalidInput, match="language"):
        encode_run_body(model, {"audio": AUDIO, "language": "en"})
    with pytest.raises(InvalidInput, match="audio"):
        encode_run_body(model, {"audio": "not bytes"})
    with pytest.raises(InvalidInput, match="empty"):
        encode_run_body(model, {"audio": b""})
    with pytest.raises(InvalidInput):
        json_inputs(model, {"audio": AUDIO})


def test_unencodable_json_inputs_are_invalid_input() -> None:
    m3 = get_model("@cf/baai/bge-m3")
    with pytest.raises(InvalidInput, match="JSON"):
        encode_run_body(m3, {"text": ["a"], "x": float("nan")})
    with pytest.raises(InvalidInput, match="JSON"):
        encode_run_body(m3, {"text": [b"bytes"]})


# --------------------------------------------------------------------------- errors


def envelope(code: int | None, message: str) -> bytes:
    errors: list[dict[str, Any]] = [{"message": message}] if message else []
    if code is not None:
        errors = [{"code": code, "message": message}]
    return json.dumps({"result": None, "success": False, "errors": errors, "messages": []}).encode()


DAILY_4006_NONSTANDARD = json.dumps(
    {
        "error": {
            "message": "4006: you have used up your daily free allocation of 10,000 neurons, "
            "please upgrade to Cloudflare's Workers Paid plan",
            "stage": "pipeline",
            "code": "internal_error",
        }
    }
).encode()

ERROR_TABLE: list[tuple[int, bytes, type[ProviderError], int | None]] = [
    (
        429,
        envelope(3021, "rate limiting: inference request per min rate reached"),
        RateLimited,
        3021,
    ),
    (429, b"", RateLimited, None),
    (429, b"<html>Too Many Requests</html>", RateLimited, None),
    (
        429,
        envelope(3040, "Capacity temporarily exceeded, please try again."),
        CapacityExceeded,
        3040,
    ),
    (
        429,
        envelope(3036, "You have used up your daily free allocation of 10,000 neurons."),
        DailyNeuronsExhausted,
        3036,
    ),
    (
        429,
        envelope(4006, "4006: you have used up your daily free allocation"),
        DailyNeuronsExhausted,
        4006,
    ),
    (500, DAILY_4006_NONSTANDARD, DailyNeuronsExhausted, 4006),
    (429, DAILY_4006_NONSTANDARD, DailyNeuronsExhausted, 4006),
    (
        200,
        envelope(None, "You have used up your Daily Free Allocation"),
        DailyNeuronsExhausted,
        None,
    ),
    (400, envelope(5006, "AiError: Bad input: Error: oneOf at '/' not met"), InvalidInput, 5006),
    (400, envelope(5004, "Invalid data type for base64 input"), InvalidInput, 5004),
    (400, envelope(3003, "Request is missing headers or body"), InvalidInput, 3003),
    (413, envelope(3006, "Request is too large"), InvalidInput, 3006),
    (413, b"", InvalidInput, None),
    (400, envelope(5007, "No such model @cf/x/y or task"), UnknownModel, 5007),
    (404, envelope(3042, "The model name is invalid"), UnknownModel, 3042),
    (404, b"Not Found", UnknownModel, None),
    (404, envelope(7000, "No route for that URI"), UnknownModel, 7000),
    (401, envelope(10000, "Authentication error"), AuthenticationFailed, 10000),
    (403, envelope(10000, "Authentication error"), AuthenticationFailed, 10000),
    (401, b"", AuthenticationFailed, None),
    (403, envelope(5016, "Model agreement not accepted"), AuthenticationFailed, 5016),
    (404, envelope(7003, "Could not route to /accounts/x/ai/run"), AuthenticationFailed, 7003),
    (403, envelope(5035, "This model requires the Workers Paid plan"), PaidPlanRequired, 5035),
    (500, envelope(None, "internal error"), ServerError, None),
    (502, b"<html><body>Bad gateway</body></html>", ServerError, None),
    (503, b"", ServerError, None),
    (408, envelope(3007, "Timeout"), ServerError, 3007),
    (408, envelope(3008, "Aborted"), ServerError, 3008),
    (418, envelope(None, "teapot"), InvalidInput, None),
    (400, envelope(9999, "something new"), InvalidInput, 9999),
    (405, envelope(5019, "Deprecated SDK version"), InvalidInput, 5019),
    (200, envelope(None, "weird"), ServerError, None),
    (200, envelope(5006, "Bad input"), InvalidInput, 5006),
]


@pytest.mark.parametrize(("status", "body", "kind", "code"), ERROR_TABLE)
def test_error_mapping(
    status: int, body: bytes, kind: type[ProviderError], code: int | None
) -> None:
    err = error_from_response(status, {}, body, model="@cf/baai/bge-base-en-v1.5")
    assert type(err) is kind
    assert err.status == status
    assert err.code == code
    assert err.model == "@cf/baai/bge-base-en-v1.5"
    assert str(err) == err.message and err.message


def test_error_messages_say_what_to_do() -> None:
    daily = error_from_response(429, {}, envelope(3036, "daily free allocation used"))
    assert "00:00 UTC" in daily.message
    auth = error_from_response(401, {}, envelope(10000, "Authentication error"))
    assert "Workers AI Read" in auth.message and "Workers AI Edit" in auth.message
    assert "CLOUDFLARE_API_TOKEN" in auth.message
    big = error_from_response(413, {}, envelope(3006, "Request is too large"))
    assert "batch_size" in big.message
    rate = error_from_response(429, {}, envelope(3021, "rate limiting"))
    assert "requests_per_minute" in rate.message


def test_error_detail_is_bounded() -> None:
    err = error_from_response(502, {}, b"<html>" + b"x" * 10_000 + b"</html>")
    assert len(err.message) < 600
    long = envelope(None, "x" * 5000 + " daily free allocation used up")
    err = error_from_response(500, {}, long)
    assert isinstance(err, DailyNeuronsExhausted) and len(err.message) < 600


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        ({"Retry-After": "-3"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_parse_retry_after_http_date() -> None:
    now = 1_800_000_000.0
    header = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"Retry-After": header}, now=now) == pytest.approx(30.0)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after({"Retry-After": past}, now=now) == 0.0


def test_retry_after_is_carried_on_rate_limits() -> None:
    err = error_from_response(429, {"Retry-After": "12"}, envelope(3021, "rate limited"))
    assert isinstance(err, RateLimited) and err.retry_after == 12.0
    cap = error_from_response(429, {"retry-after-ms": "800"}, envelope(3040, "capacity"))
    assert isinstance(cap, CapacityExceeded) and cap.retry_after == 0.8
    daily = error_from_response(429, {"Retry-After": "60"}, envelope(3036, "daily free allocation"))
    assert isinstance(daily, DailyNeuronsExhausted)


def test_error_details_shapes() -> None:
    assert error_details(envelope(5006, "bad")) == (5006, "bad")
    assert error_details(DAILY_4006_NONSTANDARD)[0] == 4006
    assert error_details(b"plain text") == (None, "plain text")
    assert error_details(b"") == (None, "")
    assert error_details(b'{"errors": [{"code": "3021", "message": "m"}]}') == (3021, "m")


def test_unwrap_result() -> None:
    ok = json.dumps({"result": {"data": [[1.0]]}, "success": True, "errors": []}).encode()
    assert unwrap_result(200, {}, ok) == {"data": [[1.0]]}
    with pytest.raises(TransportError, match="non-JSON"):
        unwrap_result(200, {}, b"<html>hi</html>")
    with pytest.raises(TransportError, match="empty"):
        unwrap_result(200, {}, b"")
    with pytest.raises(TransportError, match="envelope"):
        unwrap_result(200, {}, b'{"data": [[1.0]]}')
    with pytest.raises(TransportError):
        unwrap_result(200, {}, b"[1, 2]")
    with pytest.raises(ServerError):
        unwrap_result(200, {}, b'{"success": false, "errors": []}')
    with pytest.raises(InvalidInput):
        unwrap_result(400, {}, envelope(5006, "bad"))
    assert unwrap_result(200, {}, b'{"responses": []}', allow_bare=True) == {"responses": []}


def test_an_image_model_may_answer_the_image_itself_or_the_envelope() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(32)
    assert unwrap_result(200, {"content-type": "image/png"}, png, image=True) == png
    # the bytes say it too, whatever the content type (a gateway may relabel it)
    jpeg = b"\xff\xd8\xff\xe0" + bytes(32)
    assert (
        unwrap_result(200, {"content-type": "application/octet-stream"}, jpeg, image=True) == jpeg
    )
    wrapped = json.dumps({"result": {"image": "aGk="}, "success": True, "errors": []}).encode()
    assert unwrap_result(200, {}, wrapped, image=True) == {"image": "aGk="}
    with pytest.raises(TransportError, match="non-JSON"):  # neither an image nor JSON
        unwrap_result(200, {}, b"<html>hi</html>", image=True)
    with pytest.raises(InvalidInput):  # errors still come in the envelope
        unwrap_result(400, {}, envelope(5006, "bad"), image=True)
    with pytest.raises(TransportError, match="non-JSON"):  # only an image model's body
        unwrap_result(200, {"content-type": "image/png"}, png)
