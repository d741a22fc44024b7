"""Embeddings: texts → ``embedding`` vectors, packed many texts per request.

A catalog model's vectors have its catalog width, and the column is a fixed-size list of
it. A model outside the catalog (provider openai) has no known width: its column is a
list of any length, and the first answer of a run fixes the width every later answer of
the run must have (an answer of another width is refused like any answer off its schema).
Where an answer reports the tokens it consumed (OpenAI's ``usage.prompt_tokens``, which the
openai provider hands over), that is the usage recorded; else the count made before sending.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import polars as pl
import pyarrow as pa

from pipelines.catalog.metering import Usage
from pipelines.catalog.models import ModelInfo
from pipelines.job.spec import Job
from pipelines.sources.audio import Media
from pipelines.tasks.answers import bad_answer, check_for, finite_matrix
from pipelines.tasks.base import Call, Estimate, Item, Items, Requests, TextItem
from pipelines.tasks.texts import text_column, text_items

# Where the vectors are: ``data`` ({shape, data, pooling}); bge-m3 has also been documented
# answering a text list with ``response`` (its contexts form), read when the schema allows it.
VECTOR_FIELDS = ("data", "response")


class EmbedFamily:
    """Texts → ``embedding`` (fixed-size list of float32), packed many per request."""

    cacheable = True

    def __init__(self, job: Job, model: ModelInfo, keep: Sequence[str]) -> None:
        self.model = model
        self.input = text_column(job)
        self.truncate = job.task.truncate
        self.params = dict(job.task.params)
        # 0: unknown until the first answer (a model outside the catalog), see the docstring
        self.dim = model.dimensions or 0
        self.fixed = model.dimensions is not None
        column = pa.list_(pa.float32(), self.dim) if self.fixed else pa.list_(pa.float32())
        self.fields: tuple[pa.Field, ...] = (pa.field("embedding", column),)
        self.columns: tuple[str, ...] = (self.input,)

    def items(self, batch: pl.DataFrame) -> Items:
        return text_items(batch, self.model, column=self.input, truncate=self.truncate)

    def estimate(self, items: Sequence[Item]) -> Estimate:
        usage = Usage(input_tokens=sum(i.tokens for i in items if isinstance(i, TextItem)))
        return Estimate(usage, usage)

    def requests(self, call: Call, media: Sequence[Media]) -> Requests:
        body = {"text": [item.text for item in call.texts()], **self.params}
        return Requests(call, (MappingProxyType(body),))

    def parse(self, requests: Requests, answers: Sequence[Any]) -> dict[str, pa.Array]:
        answer = answers[0]
        field = next((f for f in VECTOR_FIELDS if isinstance(answer, dict) and f in answer), "data")
        try:
            check = check_for(self.model, "vectors", (field,))
        except TypeError:  # this model's schema has no such field: the answer is wrong
            raise bad_answer(self.model, f"no {field!r} in this model's answers") from None
        check(answer)
        rows = answer[field]
        dim = self.dim or _width(rows)
        if dim == 0:
            raise bad_answer(self.model, "no vectors, or vectors of no numbers")
        matrix = finite_matrix(self.model, rows, requests.call.size, dim)
        self.dim = dim
        flat = pa.array(matrix.reshape(-1), type=pa.float32())
        if self.fixed:
            return {"embedding": pa.FixedSizeListArray.from_arrays(flat, dim)}
        offsets = pa.array(range(0, len(flat) + 1, dim), pa.int32())
        return {"embedding": pa.ListArray.from_arrays(offsets, flat)}

    def usage(self, requests: Requests, answers: Sequence[Any]) -> Usage:
        reported = answers[0].get("usage") if isinstance(answers[0], dict) else None
        tokens = reported.get("prompt_tokens") if isinstance(reported, dict) else None
        if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0:
            return Usage(input_tokens=tokens)
        return requests.call.usage


def _width(rows: Any) -> int:
    """The width of the first vector of an answer (0 when there is none to read)."""
    first = rows[0] if isinstance(rows, list) and rows else None
    return len(first) if isinstance(first, list) else 0
