"""Models outside the catalog: what pipelines assumes of a model an OpenAI-compatible server
answers for (``provider: openai``, e.g. ``gpt-4o-mini``), where no price, limit or schema is
published to us.

Such a model is budgeted in the unit its job caps: tokens (input + output; one "neuron" of
the ledger is one token) or requests (one per request). Its token counts are the envelope
estimate (tokenizer ``generic``) until an answer reports its ``usage``. Its answers are
checked against OpenAI's shapes, which the provider hands over as Workers AI's: embeddings
as ``{shape, data}`` (of whatever width the model answers), chat as a ``chat.completion``.
Its options are OpenAI's, checked against the input schemas below.
"""

from __future__ import annotations

from typing import Any, Literal

from pipelines.catalog.models import ModelInfo

ExternalTask = Literal["embed", "generate"]
ExternalUnit = Literal["tokens", "requests"]

# Assumptions where nothing is published: the job's ``limits`` override the rate and batch.
EMBED_BATCH = 256  # texts per embeddings request (OpenAI takes up to 2,048)
DEFAULT_RPM = 300
CONTEXT_WINDOW = 128_000
DEFAULT_MAX_TOKENS = 256

_NUMBER = {"type": "number"}
_EMBED_INPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "text": {"type": "array", "items": {"type": "string"}},  # sent as ``input``
        "dimensions": {"type": "integer", "description": "Output width, where supported."},
        "user": {"type": "string"},
    },
    "required": ["text"],
}
_EMBED_OUTPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "shape": {"type": "array", "items": {"type": "integer"}},
        "data": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
    },
}
_CHAT_INPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "messages": {"type": "array"},
        "max_tokens": {"type": "integer"},
        "temperature": _NUMBER,
        "top_p": _NUMBER,
        "seed": {"type": "integer"},
        "stop": {},
        "presence_penalty": _NUMBER,
        "frequency_penalty": _NUMBER,
        "response_format": {"type": "object"},
        "user": {"type": "string"},
    },
    "required": ["messages"],
}
_USAGE = {
    "type": "object",
    "properties": {"prompt_tokens": _NUMBER, "completion_tokens": _NUMBER, "total_tokens": _NUMBER},
}
_CHAT_OUTPUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string"},
        "model": {"type": "string"},
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "index": {"type": "integer"},
                    "message": {
                        "type": "object",
                        "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
                    },
                    "finish_reason": {"type": ["string", "null"]},
                },
            },
        },
        "usage": _USAGE,
    },
    "required": ["choices"],
}


def external_model(model_id: str, task: ExternalTask, unit: ExternalUnit) -> ModelInfo:
    """The :class:`ModelInfo` pipelines works with for ``model_id``, priced in ``unit``."""
    per_token = 1_000_000.0 if unit == "tokens" else 0.0
    embed = task == "embed"
    return ModelInfo(
        id=model_id,
        task=task,
        cf_task="OpenAI-compatible " + ("embeddings" if embed else "chat completions"),
        max_items=EMBED_BATCH if embed else 1,
        max_input_tokens=None,  # unknown: the server refuses what is too long (the row fails)
        dimensions=None,  # unknown: the first answer of a run fixes it
        neurons_per_m_input=per_token,
        neurons_per_m_output=per_token,
        neurons_per_audio_minute=0.0,
        rpm=DEFAULT_RPM,
        batch_api=False,
        wire="json",
        tokenizer="generic",
        note=f"outside the catalog: budgeted in {unit}",
        tokenizer_source="envelope estimate (the model's tokenizer is unknown)",
        context_window=None if embed else CONTEXT_WINDOW,
        default_max_tokens=None if embed else DEFAULT_MAX_TOKENS,
        json_mode="none" if embed else "openai",
        request_form="none" if embed else "chat",
        neurons_per_request=1.0 if unit == "requests" else 0.0,
        budget_unit=unit,
        input_schema=_EMBED_INPUT if embed else _CHAT_INPUT,
        output_schema=_EMBED_OUTPUT if embed else _CHAT_OUTPUT,
    )
