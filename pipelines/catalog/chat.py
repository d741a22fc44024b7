"""Tokens of a chat request: what a text-generation model bills as prompt tokens.

A chat model sees the messages wrapped in its chat template: a header before each message
(role markers), an end marker after it, and the assistant header that opens the answer.
Those template tokens are billed as prompt tokens. Per tokenizer family the overhead is
fixed: Llama 3's template (``<|start_header_id|>role<|end_header_id|>\\n\\n … <|eot_id|>``)
adds 5 tokens a message and 5 a request (``<|begin_of_text|>`` and the assistant header);
the harmony format of gpt-oss adds a system preamble of about 30 tokens; the others are
counted with the larger of these. Cloudflare does not publish its templates, so the
overheads lean high; the bill's ``usage`` is what the ledger finally records.

One function for the plan, the runner and the emulator, so an estimate and a bill agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipelines.catalog.models import ModelInfo
from pipelines.catalog.tokens import model_tokens, tokenizer_facts
from pipelines.core.errors import InvalidInput

# tokenizer kind → (tokens per message, tokens per request)
_TEMPLATE: dict[str, tuple[int, int]] = {
    "llama3": (5, 5),
    "o200k-harmony": (5, 32),
    "qwen3": (5, 5),
    "tekken": (4, 4),
}
_DEFAULT_TEMPLATE = (6, 32)  # a template we have not seen: the largest of the above


def template_overhead(model: ModelInfo, messages: int) -> int:
    """Prompt tokens the chat template adds to ``messages`` messages."""
    per_message, per_request = _TEMPLATE.get(model.tokenizer, _DEFAULT_TEMPLATE)
    return per_message * messages + per_request


def prompt_tokens_many(
    model: ModelInfo, requests: Sequence[Sequence[Mapping[str, str]]]
) -> list[int]:
    """Prompt tokens of each chat request (a list of ``{role, content}`` messages)."""
    contents = [str(m.get("content", "")) for msgs in requests for m in msgs]
    counts = iter(_plain_counts(model, contents))
    return [
        sum(next(counts) for _ in msgs) + template_overhead(model, len(msgs)) for msgs in requests
    ]


def prompt_tokens(model: ModelInfo, messages: Sequence[Mapping[str, str]]) -> int:
    """Prompt tokens of one chat request."""
    return prompt_tokens_many(model, [messages])[0]


def completion_tokens(model: ModelInfo, text: str) -> int:
    """Tokens of a generated answer (no template tokens: the end marker is not billed)."""
    return _plain_counts(model, [text])[0] if text else 0


def _plain_counts(model: ModelInfo, texts: Sequence[str]) -> list[int]:
    """Token counts of ``texts`` without the special tokens an encoder adds to a whole
    input (an embedding model's ``<|endoftext|>``): in a chat those are the template's."""
    specials = tokenizer_facts(model.tokenizer).specials
    return [max(0, n - specials) for n in model_tokens(model, texts)]


# -- JSON mode in each model's form ------------------------------------------------------
# One place knows the three forms (see ``ModelInfo.json_mode``): the generate family writes
# them, the OpenAI wire rewrites them, the emulator and the local model read them.

OPENAI_SCHEMA_NAME = "output"  # OpenAI requires a name for the schema; a job's has none


def openai_response_format(schema: Any) -> dict[str, Any]:
    """OpenAI's ``response_format`` holding ``schema``."""
    return {
        "type": "json_schema",
        "json_schema": {"name": OPENAI_SCHEMA_NAME, "schema": schema, "strict": True},
    }


def json_mode_body(model: ModelInfo, schema: dict[str, Any]) -> dict[str, Any]:
    """The request fields that hold ``model`` to ``schema``, in its JSON-mode form."""
    match model.json_mode:
        case "response_format":
            return {"response_format": {"type": "json_schema", "json_schema": schema}}
        case "guided_json":
            return {"guided_json": schema}
        case "openai":
            return {"response_format": openai_response_format(schema)}
        case "none":
            raise InvalidInput(f"{model.id} has no JSON mode", model=model.id)


class JsonModeForm(ValueError):
    """A request whose JSON mode is not in its model's form (the message says which part,
    as Cloudflare's input validation words it)."""


def json_mode_schema(model: ModelInfo, body: Mapping[str, Any]) -> tuple[Any, str] | None:
    """The schema a request's JSON mode asks for, read in ``model``'s own form, and where
    in the body it sits; None outside JSON mode. Raises :class:`JsonModeForm`."""
    own = "guided_json" if model.json_mode == "guided_json" else "response_format"
    for key in ("response_format", "guided_json"):
        if key in body and (model.json_mode == "none" or key != own):
            # The published schemas allow unknown properties, so Cloudflare may ignore the
            # key; refusing it shows a client its schema would not have been applied.
            takes = "no JSON mode" if model.json_mode == "none" else f"JSON mode as '{own}'"
            raise JsonModeForm(f"'{key}' not supported at '/' (this model takes {takes})")
    if model.json_mode == "guided_json":
        schema = body.get("guided_json")
        return None if schema is None else (schema, "/guided_json")
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_object":
        return {"type": "object"}, "/response_format"
    inner, where = fmt.get("json_schema"), "/response_format/json_schema"
    if model.json_mode == "openai":
        if not isinstance(inner, dict):
            raise JsonModeForm(f"required properties at '{where}' are 'name,schema'")
        inner, where = inner.get("schema", {"type": "object"}), where + "/schema"
    if inner is None:
        raise JsonModeForm("required properties at '/response_format' are 'json_schema'")
    return inner, where
