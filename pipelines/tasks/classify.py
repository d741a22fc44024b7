"""Text classification: text → the top ``label`` and its ``score``."""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from pipelines.catalog.metering import Usage
from pipelines.catalog.models import ModelInfo
from pipelines.job.spec import Job
from pipelines.sources.audio import Media
from pipelines.tasks.answers import bad_answer, check_for
from pipelines.tasks.base import Call, Estimate, Item, Items, Requests, TextItem
from pipelines.tasks.texts import text_column, text_items


class ClassifyFamily:
    """Text → ``label`` and ``score`` (the top class), one text per request."""

    cacheable = True

    def __init__(self, job: Job, model: ModelInfo, keep: Sequence[str]) -> None:
        self.model = model
        self.input = text_column(job)
        self.truncate = job.task.truncate
        self.params = dict(job.task.params)
        self.fields: tuple[pa.Field, ...] = (
            pa.field("label", pa.string()),
            pa.field("score", pa.float32()),
        )
        self.columns: tuple[str, ...] = (self.input,)

    def items(self, batch: pl.DataFrame) -> Items:
        return text_items(batch, self.model, column=self.input, truncate=self.truncate)

    def estimate(self, items: Sequence[Item]) -> Estimate:
        usage = Usage(input_tokens=sum(i.tokens for i in items if isinstance(i, TextItem)))
        return Estimate(usage, usage)

    def requests(self, call: Call, media: Sequence[Media]) -> Requests:
        (item,) = call.texts()
        return Requests(call, (MappingProxyType({"text": item.text, **self.params}),))

    def parse(self, requests: Requests, answers: Sequence[Any]) -> dict[str, pa.Array]:
        answer = answers[0]
        check_for(self.model, "list", ("label", "score"))(answer)
        scores = np.array([r["score"] for r in answer], dtype=np.float64)
        if not np.isfinite(scores.astype(np.float32)).all():  # NaN makes the top class arbitrary
            raise bad_answer(self.model, "a score is NaN, Infinity or beyond float32")
        best = int(np.argmax(scores))
        return {
            "label": pa.array([answer[best]["label"]], pa.string()),
            "score": pa.array([float(scores[best])], pa.float32()),
        }

    def usage(self, requests: Requests, answers: Sequence[Any]) -> Usage:
        return requests.call.usage
