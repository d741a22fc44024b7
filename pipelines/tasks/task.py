"""A task family bound to one job: what every family shares, written once.

:class:`Task` packs a family's distinct items into calls of the model's batch size, splits
and subsets calls (to isolate a bad row, to fit the day's last neurons, to serve some items
from the cache), fans item results out to the rows they answer and builds output tables. It
holds no state between calls and does no I/O; the runner and ``plan`` use only this class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import polars as pl
import pyarrow as pa

from pipelines.catalog.metering import Usage, neurons
from pipelines.catalog.models import ModelInfo
from pipelines.core.columns import KEY, ROW_HASH
from pipelines.job.spec import Job
from pipelines.sources.audio import Media, MediaRef
from pipelines.tasks.base import Call, Estimate, Family, Item, Requests, RowFailure


class Task:
    """A job's task: its family, model and kept columns, and the logic all families share."""

    def __init__(self, family: Family, job: Job, model: ModelInfo, keep: Sequence[str]) -> None:
        self.family = family
        self.job = job
        self.model = model
        self.keep = list(keep)
        # what, besides an item, decides its answer (the result cache's scope): the params,
        # and a generate job's output schema (its answers' columns follow the schema)
        self.params = dict(job.task.params)
        if job.task.output_schema is not None:
            self.params["output_schema"] = job.task.output_schema
        limit = job.limits.batch_size or model.max_items
        self.batch_size = max(1, min(limit, model.max_items))

    @property
    def cacheable(self) -> bool:
        return self.family.cacheable

    def read_columns(self) -> list[str]:
        """Source columns a run reads: the family's inputs, then the kept columns."""
        return list(dict.fromkeys([*self.family.columns, *self.keep]))

    def output_schema(self, sample: pl.DataFrame | None) -> pa.Schema:
        """Key, content hash, kept columns (typed as in ``sample``, the source's first row)
        and results."""
        fields = [pa.field(KEY, pa.string()), pa.field(ROW_HASH, pa.string())]
        for name in self.keep:
            dtype: pa.DataType = pa.string()
            if sample is not None:
                dtype = sample.select(name).to_arrow().schema.field(name).type
                if dtype in (pa.large_string(), pa.string_view()):
                    dtype = pa.string()
            fields.append(pa.field(name, dtype))
        return pa.schema([*fields, *self.family.fields])

    # -- calls -----------------------------------------------------------------------------

    def prepare(self, batch: pl.DataFrame) -> tuple[list[Call], list[RowFailure]]:
        """A batch of pending rows as calls of at most ``batch_size`` items, and failures."""
        found = self.family.items(batch)
        hashed = [ROW_HASH] if ROW_HASH in batch.columns else []  # see core.columns
        rows = batch.select([KEY, *hashed, *self.keep])
        calls: list[Call] = []
        for start in range(0, len(found.distinct), self.batch_size):
            stop = min(start + self.batch_size, len(found.distinct))
            row_idx: list[int] = []
            item_of_row: list[int] = []
            for j, i in enumerate(range(start, stop)):
                row_idx.extend(found.rows_of[i])
                item_of_row.extend([j] * len(found.rows_of[i]))
            items = found.distinct[start:stop]
            calls.append(Call(items, rows[row_idx], tuple(item_of_row), self.estimate(items)))
        return calls, list(found.failures)

    def split(self, call: Call, at: int) -> tuple[Call, Call] | None:
        """The first ``at`` items and the rest; ``None`` when that leaves a side empty (a
        one-item call cannot be split)."""
        if not 0 < at < call.size:
            return None
        return self.subset(call, range(at)), self.subset(call, range(at, call.size))

    def subset(self, call: Call, items: Sequence[int]) -> Call:
        """A call for some of ``call``'s items, with every row those items answer."""
        position = {item: i for i, item in enumerate(items)}
        mask = [item in position for item in call.item_of_row]
        rows = call.rows.filter(pl.Series(mask, dtype=pl.Boolean))
        item_of_row = tuple(position[item] for item in call.item_of_row if item in position)
        chosen = tuple(call.items[i] for i in items)
        return Call(chosen, rows, item_of_row, self.estimate(chosen))

    def requests_needed(self, call: Call) -> int:
        """How many requests ``call`` will take (for ``plan``): one, or one per audio chunk."""
        return requests_for(call.items)

    # -- what the family answers -----------------------------------------------------------

    def estimate(self, items: Sequence[Item]) -> Estimate:
        """The family's estimate, with the requests counted here for every family (a model
        priced per request is budgeted by them)."""
        found = self.family.estimate(items)
        n = requests_for(items)
        return Estimate(replace(found.expected, requests=n), replace(found.worst, requests=n))

    def requests(self, call: Call, media: Sequence[Media] = ()) -> Requests:
        return self.family.requests(call, media)

    def parse(self, requests: Requests, answers: Sequence[Any]) -> dict[str, pa.Array]:
        return self.family.parse(requests, answers)

    @property
    def varies_output(self) -> bool:
        """Whether the output's length (so the price) is only known once answered."""
        return hasattr(self.family, "mean_output")

    def expect_output(self, mean_tokens: float | None) -> None:
        """Expect answers of ``mean_tokens`` (seen on rows done) in the expected figure."""
        if self.varies_output:
            self.family.mean_output = mean_tokens  # type: ignore[attr-defined]

    @property
    def expected_output(self) -> float | None:
        """The mean answer length used for the expected figure (None: not a generate task)."""
        if not self.varies_output:
            return None
        mean = getattr(self.family, "mean_output", None)
        return float(mean) if mean is not None else None

    @property
    def per_image(self) -> Usage | None:
        """An image task's tiles and steps per image (None: not an image task)."""
        per_image = getattr(self.family, "per_image", None)
        return per_image if isinstance(per_image, Usage) else None

    @property
    def retries_invalid(self) -> bool:
        """Whether a bad answer is asked again in the same run (else its rows fail as
        retryable, for the next run): for families whose answers vary between tries."""
        return bool(getattr(self.family, "retry_invalid", False))

    def check_answer(self, requests: Requests, index: int, answer: Any) -> None:
        """Raise ``TransportError`` when answer ``index`` of ``requests`` is bad (families
        that retry invalid answers define ``check_answer``)."""
        check = getattr(self.family, "check_answer", None)
        if check is not None:
            check(requests, index, answer)

    def usage(self, requests: Requests, answers: Sequence[Any]) -> Usage:
        """What the family says the answered requests consumed, and how many they were."""
        if not answers:
            return Usage()
        return replace(self.family.usage(requests, answers), requests=len(answers))

    def neurons(self, usage: Usage) -> float:
        return neurons(self.model, usage)

    # -- results ---------------------------------------------------------------------------

    def identities(self, call: Call) -> list[tuple[Any, ...]]:
        """What makes each item's answer (for the cache): its text and per-row options."""
        return [identity(item) for item in call.items]

    def output_table(self, call: Call, per_item: dict[str, pa.Array]) -> pa.Table:
        """The output rows of ``call``: key, kept columns and result columns."""
        table = call.rows.to_arrow()
        for name, array in fan_out(call, per_item).items():
            table = table.append_column(name, array)
        return table


def requests_for(items: Sequence[Item]) -> int:
    """Requests a call of ``items`` takes: one, or one per audio chunk."""
    refs = [item for item in items if isinstance(item, MediaRef)]
    return sum(ref.chunks_expected() for ref in refs) if refs else 1


def identity(item: Item) -> tuple[Any, ...]:
    """A text item's cache identity: the text, then its option values in name order."""
    if isinstance(item, MediaRef):
        # a path, size and duration do not identify a recording's content
        raise TypeError("audio files have no cache identity")
    return (item.text, *(value for _, value in item.options))


def fan_out(call: Call, per_item: dict[str, pa.Array]) -> dict[str, pa.Array]:
    """Per-item result columns spread over every row of ``call``."""
    if call.item_of_row == tuple(range(call.size)):
        return per_item
    take = pa.array(call.item_of_row, pa.int32())
    return {name: array.take(take) for name, array in per_item.items()}
