"""The text-generation (chat) models: a request read in the model's own form, a
deterministic answer, cut at ``max_tokens``, answered in the model's own shape.

Two request forms exist (``ModelInfo.request_form``): Cloudflare's classic one (``prompt``
or ``messages``; answers ``{response, usage}``) and chat completions (``messages``; answers
an OpenAI ``chat.completion``). gpt-oss takes both: a ``prompt`` gets the classic shape.

The answer is a pure function of the model, the messages, the sampling parameters and the
seed (the request's ``seed``, else the emulator's): a hash of them seeds the words, drawn
from the prompt's own words and a filler vocabulary, and a natural length of 20–300
tokens. ``max_tokens`` is not part of the hash, so a cut answer is a prefix of the uncut
one, as a real model's is. The cut is found by binary search on the prefix length with
:func:`~pipelines.catalog.chat.completion_tokens`, so the billed count never exceeds it.

JSON mode (``ModelInfo.json_mode``) takes the schema in the model's form and answers a
value made by :mod:`pipelines.emulator.json_values` (or, with ``json_failure_rate``, fails
with "JSON Mode couldn't be met"). Usage is counted with the same functions the plan uses:
:func:`~pipelines.catalog.chat.prompt_tokens` and ``completion_tokens``.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from pipelines.catalog.chat import JsonModeForm, completion_tokens, json_mode_schema, prompt_tokens
from pipelines.catalog.metering import Usage
from pipelines.catalog.models import ModelInfo
from pipelines.emulator import json_values
from pipelines.emulator.config import EmulatorConfig
from pipelines.emulator.envelope import bad_input, json_mode_failed
from pipelines.emulator.inputs import ModelInput
from pipelines.emulator.outputs import Outcome
from pipelines.emulator.vectors import words

Shape = Literal["classic", "completion"]

# The parameters that change what a model samples (max_tokens only cuts it short).
_SAMPLING = (
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
    "reasoning_effort",
)
_FILLER = tuple(
    "the a of and to in is that it for on with as this was are be by at from or an which "
    "have not they can more about their has one also other these when some into there what "
    "so than its only over such most new time may like well both each many much between "
    "where after before through during under result data value answer point case example "
    "model system first second next often however because therefore simply clearly".split()
)
_PROMPT_SHARE = 0.3  # of the answer's words taken from the prompt, so answers look on topic
_VOCABULARY_WORDS = 64
NATURAL_TOKENS = (20, 300)
"""The range an uncut answer's length is drawn from: that many words, each about a token
(plus a full stop every 5–14 words)."""


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat request, reduced to what shapes the answer."""

    messages: tuple[dict[str, str], ...]
    prompt_form: bool
    max_tokens: int
    schema: Any
    """The JSON schema the answer must meet; None outside JSON mode."""
    key: bytes
    """Hash of the model, messages, sampling parameters, schema and seed."""


@dataclass(frozen=True)
class Generation:
    """An answer: its text, its JSON value (JSON mode, uncut), why it ended, its usage."""

    text: str
    value: Any
    has_value: bool
    finish_reason: Literal["stop", "length"]
    usage: Usage


def infer(
    model: ModelInfo,
    inp: ModelInput,
    config: EmulatorConfig,
    *,
    created: int,
    openai: bool = False,
    json_draw: float | None = None,
) -> Outcome:
    """Answer a validated request in the model's shape (``openai``: always a completion).
    ``json_draw`` decides a JSON-mode failure (see :func:`generate`)."""
    req = parse(model, inp.payload, config.seed)
    gen = generate(model, req, config, json_draw)
    shape: Shape = "completion" if openai else shape_of(model, req)
    if shape == "completion":
        return Outcome(completion(model, req, gen, created), gen.usage, 1)
    response = gen.value if gen.has_value and config.json_response == "object" else gen.text
    return Outcome({"response": response, "usage": usage_json(gen.usage)}, gen.usage, 1)


def shape_of(model: ModelInfo, req: ChatRequest) -> Shape:
    """Chat-completions models answer a completion, except gpt-oss to a bare ``prompt``."""
    return "completion" if model.request_form == "chat" and not req.prompt_form else "classic"


def parse(model: ModelInfo, payload: dict[str, Any], default_seed: int) -> ChatRequest:
    """The request's messages, limits, schema and answer key (400 / 5006 when unusable)."""
    if payload.get("stream") is True:
        raise bad_input("Error: stream is not emulated (the emulator answers whole JSON only)")
    if "input" in payload and "messages" not in payload and "prompt" not in payload:
        raise bad_input("Error: the Responses input form ('input') is not emulated")
    prompt_form = "messages" not in payload
    if prompt_form:
        messages = [{"role": "user", "content": str(payload["prompt"])}]
    else:
        messages = [
            {"role": str(m.get("role", "user")), "content": _content_text(m.get("content"))}
            for m in payload["messages"]
            if isinstance(m, dict)
        ]
    limit = payload.get("max_completion_tokens", payload.get("max_tokens"))
    limit = (model.default_max_tokens or 256) if limit is None else limit
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise bad_input("Error: minimum at '/max_tokens' not met (must be >= 1)")
    schema = json_schema(model, payload)
    seed = payload.get("seed")
    material = {
        "model": model.id,
        "messages": messages,
        "sampling": {k: payload[k] for k in _SAMPLING if k in payload},
        "schema": None if schema is None else json_values.canonical(schema),
        "seed": seed if isinstance(seed, int) else default_seed,
    }
    key = hashlib.blake2b(orjson.dumps(material, option=orjson.OPT_SORT_KEYS), digest_size=16)
    return ChatRequest(tuple(messages), prompt_form, limit, schema, key.digest())


def _content_text(content: Any) -> str:
    """A message's text: a string, or the ``text`` of its parts (images carry none)."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else [content]
    return "\n".join(str(p["text"]) for p in parts if isinstance(p, dict) and "text" in p)


def json_schema(model: ModelInfo, payload: dict[str, Any]) -> Any:
    """The schema JSON mode asks for, read in the model's own form; None without JSON mode."""
    try:
        found = json_mode_schema(model, payload)
    except JsonModeForm as exc:
        raise bad_input(f"Error: {exc}") from None
    return None if found is None else _checked(*found)


def _checked(schema: Any, where: str) -> Any:
    try:
        json_values.validator(schema)
    except json_values.InvalidSchema as exc:
        raise bad_input(f"Error: '{where}' is not a valid JSON schema ({exc})") from None
    return schema if schema not in ({}, True) else {"type": "object"}


def generate(
    model: ModelInfo, req: ChatRequest, config: EmulatorConfig, json_draw: float | None = None
) -> Generation:
    """The answer to ``req``, cut to ``max_tokens`` (and to what the context window leaves)."""
    prompt = prompt_tokens(model, req.messages)
    window = model.context_window
    if window is not None and prompt >= window:
        raise bad_input(
            f"Error: the prompt has {prompt} tokens, which leaves no room in the model's "
            f"context window of {window}"
        )
    room = req.max_tokens if window is None else min(req.max_tokens, window - prompt)
    vocabulary = _vocabulary(req.messages)
    value: Any = None
    if req.schema is not None:
        status = 200 if config.json_failure_mode == "envelope-200" else 400
        # per attempt when the service draws it; else fixed by the request
        draw = _unit(req.key, b"json-failure") if json_draw is None else json_draw
        if draw < config.json_failure_rate:
            raise json_mode_failed(status)
        try:
            strings = (*vocabulary, *_FILLER)  # string values: on-topic words and filler
            value = json_values.generate(req.schema, _seed(req.key, b"json"), strings)
        except json_values.Unsatisfiable:
            raise json_mode_failed(status) from None
        natural = orjson.dumps(value).decode()
    else:
        natural = answer_text(_seed(req.key, b"text"), vocabulary)
    text, count = fit(model, natural, room)
    cut = len(text) < len(natural)
    return Generation(
        text,
        None if cut else value,
        req.schema is not None and not cut,
        "length" if cut else "stop",
        Usage(prompt, count),
    )


def fit(model: ModelInfo, text: str, limit: int) -> tuple[str, int]:
    """The longest prefix of ``text`` of at most ``limit`` completion tokens, and its count."""
    count = completion_tokens(model, text)
    if count <= limit:
        return text, count
    # Binary search on the prefix length; ``fits`` always holds a prefix known to fit, so
    # the result fits even where a longer prefix counts fewer tokens than a shorter one.
    fits, over, best = 0, len(text), 0
    while over - fits > 1:
        mid = (fits + over) // 2
        n = completion_tokens(model, text[:mid])
        if n <= limit:
            fits, best = mid, n
        else:
            over = mid
    return text[:fits], best


def answer_text(seed: int, vocabulary: tuple[str, ...]) -> str:
    """Sentences of filler and prompt words, about ``NATURAL_TOKENS`` long."""
    rng = random.Random(seed)
    remaining = rng.randint(*NATURAL_TOKENS)  # words: common ones are about a token each
    sentences = []
    while remaining > 0:
        size = min(remaining, rng.randint(5, 14))
        picked = [
            rng.choice(vocabulary)
            if vocabulary and rng.random() < _PROMPT_SHARE
            else rng.choice(_FILLER)
            for _ in range(size)
        ]
        sentences.append(" ".join(picked).capitalize() + ".")
        remaining -= size
    return " ".join(sentences)


def _vocabulary(messages: tuple[dict[str, str], ...]) -> tuple[str, ...]:
    """The last message's distinct alphabetic words (the first few dozen)."""
    text = messages[-1]["content"] if messages else ""
    found = (w for w in words(text) if w.isalpha() and len(w) <= 24)
    return tuple(dict.fromkeys(found))[:_VOCABULARY_WORDS]


def _seed(key: bytes, label: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(key + label, digest_size=8).digest(), "big")


def _unit(key: bytes, label: bytes) -> float:
    """A number in [0, 1) fixed by the request and ``label``."""
    return _seed(key, label) / 2.0**64


def usage_json(usage: Usage) -> dict[str, int]:
    """Usage as the answers report it."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def completion(model: ModelInfo, req: ChatRequest, gen: Generation, created: int) -> dict[str, Any]:
    """An OpenAI ``chat.completion``; in JSON mode its content is the JSON text."""
    return {
        "id": "chatcmpl-" + req.key.hex()[:24],
        "object": "chat.completion",
        "created": created,
        "model": model.id,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": gen.text},
                "finish_reason": gen.finish_reason,
            }
        ],
        "usage": usage_json(gen.usage),
    }


def native_body(model: ModelInfo, body: dict[str, Any]) -> dict[str, Any]:
    """An ``/ai/v1/chat/completions`` body as the model's own input: ``model`` dropped and
    OpenAI's ``response_format`` restated in the model's JSON-mode form."""
    out = {k: v for k, v in body.items() if k not in ("model", "response_format")}
    fmt = body.get("response_format")
    if fmt is None:
        return out
    if not isinstance(fmt, dict):
        raise bad_input("Error: type at '/response_format' not met (must be object)")
    kind = fmt.get("type")
    if kind == "text":
        return out
    if model.json_mode in ("openai", "none") or kind not in ("json_object", "json_schema"):
        out["response_format"] = fmt  # as sent: the model's own checks answer it
        return out
    inner = fmt.get("json_schema")
    schema = {"type": "object"}
    if kind == "json_schema" and isinstance(inner, dict):
        schema = inner.get("schema", schema)
    if model.json_mode == "guided_json":
        out["guided_json"] = schema
    else:
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    return out
