"""Request bodies: JSON or raw audio in, validated against the model's published input schema.

Validators are compiled once per model and cached. Audio arrives three ways (raw binary body,
JSON uint8 array, base64 string) and leaves as bytes with its real decoded duration, which
is what whisper bills by.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from functools import cache
from typing import Any

# jsonschema ships no type information and its stubs are not a dependency
from jsonschema import Draft202012Validator  # type: ignore[import-untyped,unused-ignore]
from jsonschema.exceptions import (  # type: ignore[import-untyped,unused-ignore]
    ValidationError,
    best_match,
)

from pipelines.catalog.models import ModelInfo
from pipelines.core.errors import SourceError
from pipelines.emulator.envelope import bad_input, incomplete_request, invalid_base64, loads
from pipelines.media.audio import probe_bytes


@dataclass
class ModelInput:
    """A validated model input; audio models carry decoded bytes and their duration."""

    payload: dict[str, Any]
    audio: bytes | None = field(default=None, repr=False)
    audio_seconds: float = 0.0


@cache
def _input_validator(model: ModelInfo) -> Draft202012Validator:
    # ModelInfo hashes by its catalog facts, so this compiles each schema once per process
    return Draft202012Validator(_batch_branch_required(model.input_schema))


def _batch_branch_required(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its Batch API branch requiring ``requests``.

    llama-3.3's published input is ``oneOf: [Prompt, Messages, Async Batch]``, and its Async
    Batch branch lists ``requests`` without requiring it: every object matches that branch,
    so a valid prompt matches two branches and strict ``oneOf`` refuses it. A batch body
    always carries ``requests``; saying so is the only change made.
    """
    branches = schema.get("oneOf")
    if not isinstance(branches, list):
        return schema
    fixed = [
        {**b, "required": ["requests"]}
        if isinstance(b, dict) and set(b.get("properties") or {}) == {"requests"}
        else b
        for b in branches
    ]
    return {**schema, "oneOf": fixed}


def validate(model: ModelInfo, obj: Any) -> None:
    """400 / 5006 unless ``obj`` matches the model's input schema."""
    v = _input_validator(model)
    if v.is_valid(obj):  # the fast path; errors are only worked out for bad input
        return
    err = best_match(v.iter_errors(obj))
    raise bad_input(describe(err) if err is not None else "Error: invalid input")


def describe(err: ValidationError) -> str:
    """Cloudflare-style wording: ``Error: <keyword> at '<pointer>' not met (<detail>)``."""
    pointer = "/" + "/".join(str(p) for p in err.absolute_path)
    kw = str(err.validator)
    value = err.validator_value
    if kw == "required":
        missing = [name for name in value if name not in (err.instance or {})]
        names = ",".join(missing or value)
        return f"Error: required properties at '{pointer}' are '{names}'"
    detail = _detail(kw, value)
    if detail is None:
        detail = err.message if len(err.message) <= 160 else err.message[:157] + "..."
    return f"Error: {kw} at '{pointer}' not met ({detail})"


def _detail(keyword: str, value: Any) -> str | None:
    if keyword == "minLength":
        return "must not be empty" if value == 1 else f"at least {value} characters"
    if keyword in ("maxItems", "minItems"):
        return f"{'at most' if keyword == 'maxItems' else 'at least'} {value} items"
    if keyword == "minimum":
        return f"must be >= {value}"
    if keyword == "type":
        return f"must be {value}"
    if keyword == "enum" and isinstance(value, list):
        return f"must be one of {', '.join(map(str, value))}"
    return None


def parse_json(body: bytes) -> Any:
    """The body as JSON; 400 / 3003 when it is empty or not JSON."""
    if not body.strip():
        raise incomplete_request("empty body")
    try:
        return loads(body)
    except ValueError:
        raise incomplete_request("body is not valid JSON") from None


def raw_audio_input(body: bytes) -> ModelInput:
    """A raw binary audio body (whisper, whisper-tiny-en); 400 / 3003 when empty."""
    if not body:
        raise incomplete_request("empty body")
    return _with_audio({}, body)


def check_input(model: ModelInfo, obj: Any) -> ModelInput:
    """Validate a JSON input (a sync body or one Batch API item) and decode any audio."""
    if not isinstance(obj, dict):
        raise bad_input("Error: type at '/' not met (must be object)")
    if model.wire == "binary" and isinstance(obj.get("audio"), list):
        # A uint8 array can be megabytes of JSON numbers; jsonschema would walk each one.
        # The schema checks the object's shape, bytes() checks every value in C.
        validate(model, {**obj, "audio": []})
    else:
        validate(model, obj)
    if model.wire == "binary":
        try:
            audio = bytes(obj["audio"])
        except (TypeError, ValueError):
            raise bad_input("Error: items at '/audio' not met (uint8 values 0-255)") from None
        return _with_audio(obj, audio)
    if model.wire == "base64":
        try:
            audio = base64.b64decode(obj["audio"], validate=True)
        except (binascii.Error, ValueError):
            raise invalid_base64() from None
        task = obj.get("task", "transcribe")
        if task not in ("transcribe", "translate"):
            raise bad_input(f"Error: unsupported task {task!r} at '/task'")
        return _with_audio(obj, audio)
    return ModelInput(obj)


def _with_audio(payload: dict[str, Any], audio: bytes) -> ModelInput:
    try:
        info = probe_bytes(audio)
    except SourceError as exc:
        raise bad_input(f"could not decode the audio ({exc.message})") from None
    return ModelInput(payload, audio=audio, audio_seconds=info.duration_s)
