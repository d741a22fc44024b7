"""The text-to-image models: a real, decodable picture drawn from a hash of the request, in
the model's own wire form, metered per tile and step.

The picture is a pure function of the model, the prompt, the negative prompt, the seed (the
request's, else the emulator's), the guidance, the size and the steps: a background and a
few shapes whose colours and places come from that hash, with the prompt's first words
written on it, at exactly the requested size (or the model's default). It is drawn on an
8-colour palette, so a 1024×1024 PNG takes a few milliseconds.

Wire forms, as each model's published output schema says: flux-1-schnell and lucid-origin
answer JSON ``{"image": <base64>}`` (a JPEG inside; the real format is unpublished), the
Stable Diffusion models a PNG body and phoenix-1.0 a JPEG body. ``corrupt_image_rate`` makes
a served, billed answer whose image is cut short (it announces its format but does not
decode), as a broken upstream answer would.
"""

from __future__ import annotations

import base64
import hashlib
import io
import random
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from PIL import Image, ImageDraw, ImageFont

from pipelines.catalog.images import facts, image_size, image_steps, image_usage
from pipelines.catalog.models import ModelInfo
from pipelines.emulator.config import EmulatorConfig
from pipelines.emulator.inputs import ModelInput
from pipelines.emulator.outputs import Outcome

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg"}
_COLOURS = 8
_SHAPES = 6
_CAPTION_CHARS = 40


@dataclass(frozen=True)
class BinaryBody:
    """An answer sent as the raw response body (not in the JSON envelope)."""

    data: bytes
    media_type: str


def infer(
    model: ModelInfo, inp: ModelInput, config: EmulatorConfig, *, corrupt_draw: float = 1.0
) -> Outcome:
    """Draw the image a validated request asks for, in the model's wire form."""
    image = facts(model)
    payload = inp.payload
    width, height = image_size(model, payload)
    data = draw(_key(model, payload, config.seed), width, height, image.format, payload)
    if corrupt_draw < config.corrupt_image_rate:
        data = data[: max(16, len(data) // 2)]  # announces its format, does not decode
    usage = image_usage(model, payload)
    if image.answer == "base64":
        return Outcome({"image": base64.b64encode(data).decode("ascii")}, usage, 1)
    return Outcome(BinaryBody(data, MEDIA_TYPES[image.format]), usage, 1)


def _key(model: ModelInfo, payload: dict[str, Any], default_seed: int) -> bytes:
    seed = payload.get("seed")
    material = {
        "model": model.id,
        "prompt": payload.get("prompt"),
        "negative_prompt": payload.get("negative_prompt"),
        "seed": seed if isinstance(seed, int) else default_seed,
        "guidance": payload.get("guidance"),
        "size": image_size(model, payload),
        "steps": image_steps(model, payload),
    }
    digest = hashlib.blake2b(orjson.dumps(material, option=orjson.OPT_SORT_KEYS), digest_size=16)
    return digest.digest()


@cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def draw(key: bytes, width: int, height: int, fmt: str, payload: dict[str, Any]) -> bytes:
    """The picture for ``key`` as ``fmt`` (``png`` or ``jpeg``) bytes."""
    rng = random.Random(key)
    picture = Image.new("P", (width, height), 0)
    picture.putpalette([rng.randrange(256) for _ in range(3 * _COLOURS)])
    pen = ImageDraw.Draw(picture)
    for colour in range(1, _SHAPES + 1):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        box = (x0, y0, x0 + rng.randrange(width // 2 + 1), y0 + rng.randrange(height // 2 + 1))
        shape = pen.ellipse if rng.random() < 0.5 else pen.rectangle
        shape(box, fill=colour % _COLOURS)
    caption = str(payload.get("prompt", ""))[:_CAPTION_CHARS]
    size = max(8, min(width, height) // 24)
    pen.text((size, size), caption, fill=_COLOURS - 1, font=_font(size))
    out = io.BytesIO()
    if fmt == "png":
        picture.save(out, format="PNG", compress_level=1)
    else:
        picture.convert("RGB").save(out, format="JPEG", quality=80)
    return out.getvalue()
