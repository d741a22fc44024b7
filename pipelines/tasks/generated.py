"""Reading a text-generation answer, and typing JSON answers as Parquet columns.

Answers come in two shapes: Cloudflare's ``{response, usage}`` (with ``finish_reason``
beside them when the openai provider translated a ``chat.completion``; without it, an answer
is cut off when it used ``max_tokens``) and an OpenAI ``chat.completion``
(``choices[0].message.content``, ``finish_reason``, ``usage``). In JSON
mode ``response`` may be a string of JSON or an already-parsed object: Cloudflare's docs show
an object where its type declarations say string (workers-sdk issue 12398), so both are
read. The answer is checked against the model's published output schema (with a parsed
object standing in as its JSON text), then its JSON against the job's ``output_schema``.

A schema's top-level properties become columns: ``string`` → string, ``integer`` → int64,
``number`` → float64, ``boolean`` → bool, an array of one of those → a list column, an
object with properties → a struct of them; anything else (a union, an untyped value, an
array of objects) → a string column holding the value's JSON text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import pyarrow as pa
from jsonschema import Draft202012Validator  # type: ignore[import-untyped,unused-ignore]
from jsonschema.exceptions import best_match  # type: ignore[import-untyped,unused-ignore]

from pipelines.catalog.models import ModelInfo
from pipelines.core.errors import InvalidInput, TransportError
from pipelines.tasks.answers import check_for

RAW_CHARS = 2000  # of a bad answer, kept in the failure's message
_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?```\s*$", re.DOTALL)


@dataclass(frozen=True)
class Answer:
    """One generation: its text, parsed JSON (with a schema), and what it reports."""

    text: str
    value: Any
    finish_reason: str | None
    truncated: bool
    prompt_tokens: int | None
    completion_tokens: int | None


def _count(usage: Any, name: str) -> int | None:
    value = usage.get(name) if isinstance(usage, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return int(value)
    return None


def _shape(model: ModelInfo, answer: Any) -> tuple[Any, str | None, Any]:
    """(content, finish_reason, usage) after checking the model's published shape."""
    if isinstance(answer, dict) and "choices" in answer:
        check_for(model, "object", ("choices",))(answer)
        choices = answer["choices"]
        first = choices[0] if isinstance(choices, list) and choices else None
        message = first.get("message") if isinstance(first, dict) else None
        if not isinstance(message, dict) or not isinstance(message.get("content"), str | dict):
            raise _bad(model, "no choices[0].message.content", answer)
        reason = first.get("finish_reason") if isinstance(first, dict) else None
        return message["content"], reason if isinstance(reason, str) else None, answer.get("usage")
    content = answer.get("response") if isinstance(answer, dict) else None
    if isinstance(content, dict | list):  # JSON mode's parsed object (see the docstring)
        check_for(model, "object", ("response",))({**answer, "response": json.dumps(content)})
    else:
        check_for(model, "object", ("response",))(answer)
    # Cloudflare's shape has no finish_reason; the openai provider keeps the one it got
    reason = answer.get("finish_reason")
    return content, reason if isinstance(reason, str) else None, answer.get("usage")


def read_answer(
    model: ModelInfo, answer: Any, schema: dict[str, Any] | None, max_tokens: int
) -> Answer:
    """Read one answer; raises ``TransportError`` (asked again) for a bad one."""
    content, reason, usage = _shape(model, answer)
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    completion = _count(usage, "completion_tokens")
    truncated = reason == "length" or (
        reason is None and completion is not None and completion >= max_tokens
    )
    value = None
    if schema is not None:
        value = _json_value(model, content, schema, truncated, max_tokens)
    return Answer(text, value, reason, truncated, _count(usage, "prompt_tokens"), completion)


def _json_value(
    model: ModelInfo, content: Any, schema: dict[str, Any], truncated: bool, max_tokens: int
) -> Any:
    if isinstance(content, str):
        fenced = _FENCE.match(content)  # some models wrap JSON in a Markdown fence
        try:
            value = json.loads(fenced.group(1) if fenced else content)
        except json.JSONDecodeError as exc:
            if truncated:
                # the same request would be cut the same way: asking again cannot help
                raise InvalidInput(
                    f"the answer was cut off at max_tokens ({max_tokens}) before its JSON "
                    "was complete: raise task.params.max_tokens and re-run with "
                    f"--retry-failed; the answer was: {content[:RAW_CHARS]!r}",
                    model=model.id,
                ) from None
            raise _bad(model, f"the answer is not JSON ({exc.msg})", content) from None
    else:
        value = content
    validator = _validator(json.dumps(schema, sort_keys=True))
    if not validator.is_valid(value):
        error = best_match(validator.iter_errors(value))
        where = "/" + "/".join(str(p) for p in error.absolute_path) if error else ""
        detail = f"{where}: {error.message}" if error else "invalid"
        raise _bad(model, f"the answer does not match task.output_schema ({detail})", content)
    return value


@cache
def _validator(schema_json: str) -> Any:
    return Draft202012Validator(json.loads(schema_json))


def _bad(model: ModelInfo, why: str, raw: Any) -> TransportError:
    text = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False, default=str)
    return TransportError(
        f"{model.id}: {why}; nothing was stored; the answer was: {text[:RAW_CHARS]!r}",
        model=model.id,
    )


# -- typed columns ------------------------------------------------------------------------

_SCALARS: dict[str, pa.DataType] = {
    "string": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
}


def _json_type(spec: Any) -> str | None:
    """The one JSON type ``spec`` allows (a nullable ``[T, "null"]`` counts as ``T``)."""
    if not isinstance(spec, dict):
        return None
    kind = spec.get("type")
    if isinstance(kind, list):
        rest = [k for k in kind if k != "null"]
        kind = rest[0] if len(rest) == 1 else None
    if kind is None and "enum" in spec and all(isinstance(v, str) for v in spec["enum"]):
        return "string"
    return kind if isinstance(kind, str) else None


def arrow_type(spec: Any) -> pa.DataType | None:
    """The Arrow type of a property, or None when it is kept as JSON text."""
    kind = _json_type(spec)
    if kind in _SCALARS:
        return _SCALARS[kind]
    if kind == "array":
        inner = arrow_type(spec.get("items"))
        scalar = inner is not None and not pa.types.is_nested(inner)
        return pa.list_(inner) if scalar and inner is not None else None
    if kind == "object" and isinstance(spec.get("properties"), dict) and spec["properties"]:
        fields = [(n, arrow_type(s) or pa.string()) for n, s in spec["properties"].items()]
        return pa.struct(fields)
    return None


def structured_fields(schema: dict[str, Any]) -> tuple[pa.Field, ...]:
    """One output field per top-level property of ``schema``."""
    return tuple(
        pa.field(name, arrow_type(spec) or pa.string())
        for name, spec in schema["properties"].items()
    )


def _cell(spec: Any, value: Any) -> Any:
    """``value`` shaped for its column (JSON text where the column is text for JSON)."""
    if value is None:
        return None
    typed = arrow_type(spec)
    if typed is None:
        return json.dumps(value, ensure_ascii=False)
    if pa.types.is_struct(typed):
        props = spec["properties"]
        return (
            {n: _cell(props[n], value.get(n)) for n in props} if isinstance(value, dict) else None
        )
    if pa.types.is_integer(typed) and isinstance(value, float):
        return int(value)  # JSON Schema's integer allows 3.0
    if pa.types.is_floating(typed) and isinstance(value, int):
        return float(value)
    return value


def structured_columns(schema: dict[str, Any], values: list[Any]) -> dict[str, pa.Array]:
    """The columns of ``structured_fields`` for parsed answers ``values``."""
    out: dict[str, pa.Array] = {}
    for field in structured_fields(schema):
        spec = schema["properties"][field.name]
        cells = [_cell(spec, v.get(field.name) if isinstance(v, dict) else None) for v in values]
        out[field.name] = pa.array(cells, field.type)
    return out
