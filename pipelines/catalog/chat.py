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

from pipelines.catalog.models import ModelInfo
from pipelines.catalog.tokens import model_tokens, tokenizer_facts

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
