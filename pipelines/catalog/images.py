"""What one image costs: its size in 512×512 tiles and its diffusion steps, from a request.

Cloudflare prices text-to-image models per 512×512 tile of the output and per step
(``../shared/workers-ai-generation-facts.md`` §6). How it counts tiles for a size that is
not a multiple of 512 is unpublished, so each side is rounded up (``ceil(w/512) ×
ceil(h/512)``): never fewer tiles than the image covers. flux-1-schnell takes no size and
its output size is unpublished: it is counted as 1024×1024, the upper reading. A model that
publishes no default step count (lucid-origin) is counted at its maximum. The budget, the
plan and the emulator's meter all use these functions, so a reservation and a bill agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pipelines.catalog.metering import Usage
from pipelines.catalog.models import ImageFacts, ModelInfo

TILE = 512


def facts(model: ModelInfo) -> ImageFacts:
    """The model's image facts (a text-to-image model's; others raise ``ValueError``)."""
    if model.image is None:
        raise ValueError(f"{model.id} is not a text-to-image model")
    return model.image


def tiles(width: int, height: int) -> int:
    """512×512 tiles covering a ``width`` × ``height`` image, each side rounded up."""
    return math.ceil(max(width, 1) / TILE) * math.ceil(max(height, 1) / TILE)


def image_size(model: ModelInfo, params: Mapping[str, Any]) -> tuple[int, int]:
    """The size a request asks for: its ``width``/``height``, else the model's default."""
    image = facts(model)
    if not image.sizable:
        return image.width, image.height
    width, height = params.get("width"), params.get("height")
    return (
        width if isinstance(width, int) and width > 0 else image.width,
        height if isinstance(height, int) and height > 0 else image.height,
    )


def image_steps(model: ModelInfo, params: Mapping[str, Any]) -> int:
    """The steps a request asks for: its step field, else the model's default, else (no
    published default) its maximum."""
    image = facts(model)
    for name in image.steps_params:
        value = params.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return image.default_steps if image.default_steps is not None else image.max_steps


def image_usage(model: ModelInfo, params: Mapping[str, Any]) -> Usage:
    """The tiles and steps of one image made from a request with ``params``."""
    width, height = image_size(model, params)
    return Usage(tiles=tiles(width, height), steps=image_steps(model, params))
