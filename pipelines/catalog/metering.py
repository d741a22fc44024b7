"""Neurons from usage: the one formula that the budget estimator and the emulator share.

Cloudflare bills per model in neurons per million input tokens, per million output tokens,
or per audio minute (``../shared/workers-ai-facts.md`` §3); text-to-image models per 512×512
tile of the image and per diffusion step (``../shared/workers-ai-generation-facts.md`` §6).
Whether Cloudflare rounds per request is undocumented; we never round, so sums stay exact.
A model outside the catalog (:mod:`pipelines.catalog.external`) may be priced per request
instead: its job caps requests a day, and each request costs one unit.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.catalog.models import ModelInfo


@dataclass(frozen=True)
class Usage:
    """What one request consumed."""

    input_tokens: int = 0
    output_tokens: int = 0
    audio_seconds: float = 0.0
    requests: int = 0  # filled in by the task (pipelines.tasks.task), not by the families
    tiles: int = 0  # text-to-image: 512×512 tiles of the images made
    steps: int = 0  # text-to-image: diffusion steps, summed over the images

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.audio_seconds + other.audio_seconds,
            self.requests + other.requests,
            self.tiles + other.tiles,
            self.steps + other.steps,
        )


def neurons(model: ModelInfo, usage: Usage) -> float:
    """Neurons billed for ``usage`` on ``model``."""
    return (
        usage.input_tokens * model.neurons_per_m_input / 1_000_000
        + usage.output_tokens * model.neurons_per_m_output / 1_000_000
        + usage.audio_seconds / 60.0 * model.neurons_per_audio_minute
        + usage.requests * model.neurons_per_request
        + usage.tiles * model.neurons_per_tile
        + usage.steps * model.neurons_per_step
    )
