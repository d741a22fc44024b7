"""Image bytes: what format they really are, whether they decode, their size and digest.

A text-to-image model answers bytes that are meant to be a PNG or a JPEG; pipelines never
assumes which (flux's base64 carries a format its docs do not name) and never trusts that
they decode. :func:`inspect_image` opens them with Pillow, restricted to the formats a model
can answer (PNG, JPEG, WebP: no format whose decoder runs other programs), verifies them
and decodes every pixel; anything else is :class:`NotAnImage`. :func:`thumbnail` makes the
small JPEG a contact sheet embeds.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, UnidentifiedImageError

# Pillow's names of the formats a model may answer, and the file extension of each.
FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
# A model makes at most 2500 px a side; a body claiming far more pixels is not an answer.
MAX_PIXELS = 4096 * 4096


class NotAnImage(ValueError):
    """Bytes that do not decode as a PNG, JPEG or WebP image; the message says why."""


@dataclass(frozen=True)
class ImageInfo:
    """What the bytes of one image are."""

    format: str  # "png", "jpeg" or "webp", read from the bytes
    width: int
    height: int
    sha256: str
    size: int  # bytes

    @property
    def extension(self) -> str:
        """The file extension for this format (``jpg`` for JPEG)."""
        return EXTENSIONS[self.format]


def sniff(data: bytes) -> str | None:
    """The format the first bytes announce (``png``, ``jpeg``, ``webp``), else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data), formats=list(FORMATS))
    width, height = image.size
    if width < 1 or height < 1 or width * height > MAX_PIXELS:
        raise NotAnImage(f"a {width}x{height} image is not a size a model makes")
    return image


# The sender checks an answer and the family then reads it: the same bytes object twice.
# bytes cache their hash, so the second lookup is cheap.
@lru_cache(maxsize=64)
def inspect_image(data: bytes) -> ImageInfo:
    """The format, size and digest of ``data``; raises :class:`NotAnImage` unless it is a
    whole PNG, JPEG or WebP image (checked by decoding every pixel)."""
    if not data:
        raise NotAnImage("the body is empty")
    announced = sniff(data)
    if announced is None:
        head = data[:16].hex(" ")
        raise NotAnImage(f"the body is not a PNG, JPEG or WebP image (it starts {head})")
    try:
        with _open(data) as image:
            image.verify()  # checksums and structure
        with _open(data) as image:
            image.load()  # every pixel: a truncated body fails here
            kind = FORMATS.get(image.format or "")
            width, height = image.size
    except NotAnImage:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as exc:
        raise NotAnImage(f"the {announced.upper()} body does not decode ({exc})") from None
    if kind is None:
        raise NotAnImage(f"the body decodes as {image.format}, not PNG, JPEG or WebP")
    return ImageInfo(kind, width, height, hashlib.sha256(data).hexdigest(), len(data))


def thumbnail(data: bytes, size: int) -> bytes:
    """A JPEG at most ``size`` pixels a side of the image ``data`` (raises
    :class:`NotAnImage` when it does not decode)."""
    try:
        with _open(data) as image:
            image.draft("RGB", (size, size))  # JPEG: decode at a fraction of the size
            small = image.convert("RGB")
            small.thumbnail((size, size))
            out = io.BytesIO()
            small.save(out, format="JPEG", quality=80)
            return out.getvalue()
    except NotAnImage:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as exc:
        raise NotAnImage(f"does not decode ({exc})") from None
