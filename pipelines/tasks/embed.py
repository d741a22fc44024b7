"""Embeddings: texts → ``embedding`` vectors, packed many texts per request."""

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
        self.dim = model.dimensions or 0
        self.fields: tuple[pa.Field, ...] = (
            pa.field("embedding", pa.list_(pa.float32(), self.dim)),
        )
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
        matrix = finite_matrix(self.model, answer[field], requests.call.size, self.dim)
        flat = pa.array(matrix.reshape(-1), type=pa.float32())
        return {"embedding": pa.FixedSizeListArray.from_arrays(flat, self.dim)}

    def usage(self, requests: Requests, answers: Sequence[Any]) -> Usage:
        return requests.call.usage
