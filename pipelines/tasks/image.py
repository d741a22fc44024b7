"""Images from prompts: each row's prompt template drawn by a text-to-image model.

A row renders ``task.prompt`` (and ``task.negative_prompt``) with its columns and takes its
seed from ``task.seed_column`` (or ``params.seed``); the request is the model's JSON input
(``prompt``, ``negative_prompt``, ``seed`` and the job's ``params``: size, steps, guidance).
Rows with the same prompts and the same seed are drawn once; rows without a seed are each
drawn (a model without a seed draws a new picture every time). The price is known before
sending: tiles and steps (:mod:`pipelines.catalog.images`), the same figure reserved and
expected.

An answer is the image itself (bytes) or ``{image: <base64>}``: whichever comes, its bytes
must decode as a whole PNG, JPEG or WebP image (:func:`pipelines.media.images.inspect_image`),
else the answer is a ``TransportError``, asked again up to ``limits.max_attempts`` and then
a retryable failure: never a file. The result columns are the index of the files (format,
size and digest read from the bytes); the bytes travel in the transient ``_image`` column
to the output's image writer, which names and writes each row's file.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import polars as pl
import pyarrow as pa
from jinja2 import TemplateError

from pipelines.catalog.images import image_steps, image_usage, tiles
from pipelines.catalog.metering import Usage
from pipelines.catalog.models import ModelInfo, schema_properties
from pipelines.core.columns import IMAGE_DATA, KEY
from pipelines.core.errors import TransportError
from pipelines.job.spec import Job
from pipelines.job.templates import Template, parse_template, template_columns
from pipelines.media.images import ImageInfo, NotAnImage, inspect_image
from pipelines.sources.audio import Media
from pipelines.tasks.base import Call, Estimate, Item, Items, Requests, RowFailure, TextItem

FIELDS = (
    pa.field("file", pa.string()),  # relative to the index; filled in by the image writer
    pa.field("sha256", pa.string()),
    pa.field("bytes", pa.int64()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("format", pa.string()),
    pa.field("seed", pa.int64()),
    pa.field("model", pa.string()),
    pa.field("steps", pa.int32()),
    pa.field("prompt", pa.string()),
    pa.field("negative_prompt", pa.string()),
)
SEED_RANGE = (-(2**63), 2**63 - 1)  # the index's int64 column


def image_bytes(model: ModelInfo, answer: Any) -> bytes:
    """The image of an answer: the body itself, or the base64 of ``{image}`` (or of a bare
    string); raises ``TransportError`` when there is none."""
    if isinstance(answer, bytes | bytearray | memoryview):
        return bytes(answer)
    encoded = answer.get("image") if isinstance(answer, dict) else answer
    if not isinstance(encoded, str) or not encoded:
        raise _bad(model, "the answer holds no image (neither an image body nor {image})")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(model, "its image is not valid base64") from None


def _bad(model: ModelInfo, why: str) -> TransportError:
    return TransportError(f"{model.id}: {why}; nothing was stored", model=model.id)


class ImageFamily:
    """Rows → prompts (and seeds) → image files and their index."""

    cacheable = False  # megabytes per answer, and an unseeded model never draws the same
    retry_invalid = True  # an image that does not decode is asked for again (run.sending)

    def __init__(self, job: Job, model: ModelInfo, keep: Sequence[str]) -> None:
        task = job.task
        self.model = model
        self.prompt = parse_template(task.prompt or "")
        self.negative: Template | None = (
            parse_template(task.negative_prompt) if task.negative_prompt else None
        )
        self.seed_column = task.seed_column
        self.params = dict(task.params)
        takes = schema_properties(model.input_schema)
        self.max_prompt: int | None = takes.get("prompt", {}).get("maxLength")
        self.seed_limits = (
            takes.get("seed", {}).get("minimum"),
            takes.get("seed", {}).get("maximum"),
        )
        self.per_image = image_usage(model, self.params)
        # the index's steps: as asked, or the model's published default; unknown (null)
        # when neither is (lucid-origin without steps is budgeted at its maximum)
        asked = any(name in self.params for name in ("steps", "num_steps"))
        known = asked or (model.image is not None and model.image.default_steps is not None)
        self.steps = image_steps(model, self.params) if known else None
        read = [
            *template_columns(task.templates()),
            *([task.seed_column] if task.seed_column else []),
        ]
        self.columns: tuple[str, ...] = tuple(dict.fromkeys(read))
        self.fields: tuple[pa.Field, ...] = FIELDS

    # -- rows → items -------------------------------------------------------------------

    def render(self, row: dict[str, Any]) -> dict[str, Any] | str:
        """A row's prompt, negative prompt and seed, or why the row cannot be sent."""
        nulls = [c for c in self.columns if row.get(c) is None]
        if nulls:
            return f"column {nulls[0]!r} is null: the request would have nothing there"
        try:
            prompt = self.prompt.render(row)
            negative = self.negative.render(row) if self.negative is not None else ""
        except (TemplateError, TypeError, ValueError, ArithmeticError) as exc:
            return f"the prompt template failed on this row: {type(exc).__name__}: {exc}"
        if not prompt.strip():
            return "the rendered prompt is empty"
        if self.max_prompt is not None and len(prompt) > self.max_prompt:
            return (
                f"the prompt is {len(prompt):,} characters; {self.model.id} takes at most "
                f"{self.max_prompt:,}: shorten task.prompt or the column"
            )
        seed = self._seed(row)
        if isinstance(seed, str):
            return seed
        # an empty negative prompt is none (phoenix refuses an empty one)
        return {"prompt": prompt, "negative_prompt": negative.strip() or None, "seed": seed}

    def _seed(self, row: dict[str, Any]) -> int | str | None:
        """The row's seed (None: the model picks), or why it is not one."""
        if self.seed_column is None:
            fixed = self.params.get("seed")
            return fixed if isinstance(fixed, int) else None
        value = row[self.seed_column]
        seed: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            seed = value
        elif isinstance(value, float) and value.is_integer():
            seed = int(value)
        elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            seed = int(value.strip())
        low, high = self.seed_limits
        low = SEED_RANGE[0] if not isinstance(low, int) else max(low, SEED_RANGE[0])
        high = SEED_RANGE[1] if not isinstance(high, int) else min(high, SEED_RANGE[1])
        if seed is None or not low <= seed <= high:
            wanted = "a whole number"
            if low > SEED_RANGE[0]:
                wanted += f" of at least {low}"
            return f"column {self.seed_column!r} holds {value!r}, which is not a seed: {wanted}"
        return seed

    def items(self, batch: pl.DataFrame) -> Items:
        keys: list[Any] = batch.get_column(KEY).to_list()
        columns = {c: batch.get_column(c).to_list() for c in self.columns}
        failures: list[RowFailure] = []
        found: dict[tuple[str, str], list[int]] = {}
        for i, key in enumerate(keys):
            rendered = self.render({c: values[i] for c, values in columns.items()})
            if isinstance(rendered, str):
                failures.append(RowFailure(key, "InvalidInput", rendered))
                continue
            text = json.dumps(rendered, ensure_ascii=False, sort_keys=True)
            # the same prompts and seed draw the same picture: once; without a seed, each row
            found.setdefault((text, "" if rendered["seed"] is not None else str(key)), []).append(i)
        distinct = tuple(TextItem(text, 0) for text, _ in found)
        return Items(distinct, tuple(tuple(rows) for rows in found.values()), tuple(failures))

    # -- cost ---------------------------------------------------------------------------

    def estimate(self, items: Sequence[Item]) -> Estimate:
        n = len(items)
        each = Usage(tiles=self.per_image.tiles * n, steps=self.per_image.steps * n)
        return Estimate(each, each)  # the price is known before sending

    # -- requests and answers -----------------------------------------------------------

    def requests(self, call: Call, media: Sequence[Media]) -> Requests:
        bodies = []
        for item in call.texts():
            drawn = json.loads(item.text)
            body: dict[str, Any] = {"prompt": drawn["prompt"], **self.params}
            if drawn["negative_prompt"] is not None:
                body["negative_prompt"] = drawn["negative_prompt"]
            if drawn["seed"] is not None:
                body["seed"] = drawn["seed"]
            bodies.append(MappingProxyType(body))
        return Requests(call, tuple(bodies))

    def inspect(self, answer: Any) -> tuple[bytes, ImageInfo]:
        """The answer's image bytes and what they are (``TransportError`` when they are not
        a whole image: asked again, never stored)."""
        data = image_bytes(self.model, answer)
        try:
            return data, inspect_image(data)
        except NotAnImage as exc:
            raise _bad(self.model, f"its image is unusable: {exc}") from None

    def check_answer(self, requests: Requests, index: int, answer: Any) -> None:
        self.inspect(answer)

    def parse(self, requests: Requests, answers: Sequence[Any]) -> dict[str, pa.Array]:
        drawn = [json.loads(item.text) for item in requests.call.texts()]
        images = [self.inspect(answer) for answer in answers]
        values: dict[str, list[Any]] = {
            "file": [None] * len(images),
            "sha256": [info.sha256 for _, info in images],
            "bytes": [info.size for _, info in images],
            "width": [info.width for _, info in images],
            "height": [info.height for _, info in images],
            "format": [info.format for _, info in images],
            "seed": [d["seed"] for d in drawn],
            "model": [self.model.id] * len(images),
            "steps": [self.steps] * len(images),
            "prompt": [d["prompt"] for d in drawn],
            "negative_prompt": [d["negative_prompt"] for d in drawn],
        }
        out = {f.name: pa.array(values[f.name], f.type) for f in self.fields}
        out[IMAGE_DATA] = pa.array([data for data, _ in images], pa.binary())
        return out

    def usage(self, requests: Requests, answers: Sequence[Any]) -> Usage:
        """Tiles and steps of each answered image: as requested, or the tiles of the image
        made when it is larger (never fewer than asked: a bill is never under-counted)."""
        total = Usage()
        for answer in answers:
            used = self.per_image
            try:
                _, info = self.inspect(answer)
            except TransportError:
                pass  # billed all the same: counted as asked
            else:
                made = tiles(info.width, info.height)
                used = Usage(tiles=max(used.tiles, made), steps=used.steps)
            total = total + used
        return total
