"""Row ↔ model-call translation for each task kind, kept pure (no I/O, no network).

A :class:`Task` turns a batch of pending rows into :class:`Call` objects (packing embedding
texts up to the model's batch and token limits), turns a model result back into output
columns, and says what a call costs. Rows that cannot be sent at all (null or empty text,
over-long text without ``truncate``) become failure rows here, before any neuron is spent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import polars as pl
import pyarrow as pa

from pipelines.catalog.metering import Usage, neurons
from pipelines.catalog.models import ModelInfo
from pipelines.catalog.tokens import model_tokens, truncate_to_tokens
from pipelines.core.columns import KEY
from pipelines.job.spec import Job


@dataclass
class Call:
    """One request: the distinct items it sends and every row that gets their results.

    Identical inputs in a batch are sent once (``item_of_row`` fans the result out), so a
    repeated text is never paid twice.
    """

    texts: list[str]  # distinct items sent
    tokens: list[int]  # per item
    extra: dict[str, list[Any]]  # per-item options (languages)
    rows: pl.DataFrame  # the key column plus kept columns, one row per answered row
    item_of_row: list[int]  # rows[i] gets the result of texts[item_of_row[i]]
    inputs: dict[str, Any]
    usage: Usage  # estimated before sending

    @property
    def size(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class RowFailure:
    """A row that will not be (or could not be) processed."""

    key: str
    error: str
    message: str
    code: int | None = None
    status: int | None = None
    attempts: int = 0
    retryable: bool = False


class Task(ABC):
    """What one job does with each row."""

    # whether identical items may be answered from the result cache
    cacheable = True

    def __init__(self, job: Job, model: ModelInfo, keep: list[str]) -> None:
        self.job = job
        self.model = model
        self.keep = keep
        self.params = dict(job.task.params)
        limit = job.limits.batch_size or model.max_items
        self.batch_size = max(1, min(limit, model.max_items))

    @property
    @abstractmethod
    def result_fields(self) -> list[pa.Field]:
        """Arrow fields the task adds to each output row."""

    def output_schema(self, sample: pl.DataFrame | None) -> pa.Schema:
        """Key, kept columns (typed as in ``sample``, the source's first row) and results."""
        fields = [pa.field(KEY, pa.string())]
        for name in self.keep:
            dtype: pa.DataType = pa.string()
            if sample is not None:
                dtype = sample.select(name).to_arrow().schema.field(name).type
                if dtype in (pa.large_string(), pa.string_view()):
                    dtype = pa.string()
            fields.append(pa.field(name, dtype))
        return pa.schema([*fields, *self.result_fields])

    @abstractmethod
    def inputs_for(self, texts: list[str], extra: dict[str, list[Any]]) -> dict[str, Any]:
        """The model input for these texts."""

    @abstractmethod
    def parse(self, call: Call, result: Any) -> dict[str, pa.Array]:
        """Result columns, one entry per distinct item of ``call``."""

    def input_columns(self) -> list[str]:
        """Source columns the task reads."""
        assert self.job.task.input is not None
        return [self.job.task.input]

    def estimate(self, tokens: list[int]) -> Usage:
        """Usage expected for a request carrying texts with these token counts."""
        return Usage(input_tokens=sum(tokens))

    def actual(self, call: Call, result: Any) -> Usage:
        """Usage the request really consumed (what Cloudflare bills)."""
        return call.usage

    def worst_case(self, usage: Usage) -> Usage:
        """What to reserve for an estimate: above it where the real figure can be higher."""
        return usage

    def requests_for(self, call: Call) -> int:
        """How many requests ``call`` will take (for ``plan``)."""
        return 1

    def materialize(self, call: Call) -> list[dict[str, Any]]:
        """The requests that answer ``call`` (runs in a thread: may read files)."""
        return [call.inputs]

    def combine(self, call: Call, results: list[Any]) -> Any:
        """One result from the results of :meth:`materialize`'s requests."""
        return results[0]

    def usage_of(self, call: Call, results: list[Any]) -> Usage:
        """What the requests that returned ``results`` consumed (some may be missing)."""
        return self.actual(call, results[0]) if results else Usage()

    def neurons(self, usage: Usage) -> float:
        return neurons(self.model, usage)

    # -- building calls ------------------------------------------------------------------

    def prepare(self, batch: pl.DataFrame) -> tuple[list[Call], list[RowFailure]]:
        """Split a batch of pending rows into calls and up-front failures."""
        column = self.input_columns()[0]
        texts: list[str | None] = batch.get_column(column).to_list()
        keys: list[str] = batch.get_column(KEY).to_list()
        extra_cols = self.extra_columns()
        extra_vals = {n: batch.get_column(c).to_list() for n, c in extra_cols.items()}
        failures: list[RowFailure] = []
        # distinct (text, options) items in first-seen order, and the rows each one answers
        items: dict[tuple[Any, ...], list[int]] = {}
        for i, text in enumerate(texts):
            if text is None or not str(text).strip():
                failures.append(
                    RowFailure(keys[i], "EmptyInput", f"column '{column}' is empty or null")
                )
                continue
            options = [extra_vals[n][i] for n in extra_cols]
            problem = self.check_options(dict(zip(extra_cols, options, strict=True)))
            if isinstance(problem, str):
                failures.append(RowFailure(keys[i], "InvalidOption", problem))
                continue
            ident = (str(text), *(problem[n] for n in extra_cols))
            items.setdefault(ident, []).append(i)
        if not items:
            return [], failures
        idents = list(items)
        counts = model_tokens(self.model, [ident[0] for ident in idents])
        limit = self.model.max_input_tokens
        ready: list[tuple[str, int, tuple[Any, ...], list[int]]] = []
        for ident, n in zip(idents, counts, strict=True):
            text, rows_of = ident[0], items[ident]
            if limit is not None and n > limit:
                if not self.job.task.truncate:
                    message = (
                        f"{n} tokens is over the model's limit of {limit}; "
                        "set task.truncate: true to cut long texts"
                    )
                    failures.extend(RowFailure(keys[i], "InputTooLong", message) for i in rows_of)
                    continue
                text = truncate_to_tokens(self.model.tokenizer, text, limit)
                n = model_tokens(self.model, [text])[0]
            ready.append((text, n, ident, rows_of))
        rows = batch.select([KEY, *self.keep])
        calls: list[Call] = []
        for start in range(0, len(ready), self.batch_size):
            chunk = ready[start : start + self.batch_size]
            row_idx: list[int] = []
            item_of_row: list[int] = []
            for j, (_, _, _, rows_of) in enumerate(chunk):
                row_idx.extend(rows_of)
                item_of_row.extend([j] * len(rows_of))
            extra = {name: [c[2][1 + k] for c in chunk] for k, name in enumerate(extra_cols)}
            calls.append(
                self._call(
                    [c[0] for c in chunk], [c[1] for c in chunk], extra, rows[row_idx], item_of_row
                )
            )
        return calls, failures

    def _call(
        self,
        texts: list[str],
        tokens: list[int],
        extra: dict[str, list[Any]],
        rows: pl.DataFrame,
        item_of_row: list[int],
    ) -> Call:
        return Call(
            texts=texts,
            tokens=tokens,
            extra=extra,
            rows=rows,
            item_of_row=item_of_row,
            inputs=self.inputs_for(texts, extra),
            usage=self.estimate(tokens),
        )

    def extra_columns(self) -> dict[str, str]:
        """Per-row option columns (name in :attr:`Call.extra` → source column)."""
        return {}

    def check_options(self, options: dict[str, Any]) -> dict[str, Any] | str:
        """A row's per-row options, normalised, or why the row cannot be sent."""
        return options

    def split(self, call: Call, at: int) -> tuple[Call, Call]:
        """Two calls: the first ``at`` items and the rest (to isolate a bad row, or to fit)."""
        return self.subset(call, list(range(at))), self.subset(call, list(range(at, call.size)))

    def subset(self, call: Call, items: list[int]) -> Call:
        """A call for some of ``call``'s items, with every row those items answer."""
        position = {item: i for i, item in enumerate(items)}
        mask = [item in position for item in call.item_of_row]
        rows = call.rows.filter(pl.Series(mask, dtype=pl.Boolean))
        item_of_row = [position[item] for item in call.item_of_row if item in position]
        extra = {k: [v[i] for i in items] for k, v in call.extra.items()}
        texts = [call.texts[i] for i in items]
        return self._call(texts, [call.tokens[i] for i in items], extra, rows, item_of_row)

    def identities(self, call: Call) -> list[tuple[Any, ...]]:
        """What makes each item's answer: its text and per-row options (for the cache)."""
        names = sorted(call.extra)
        return [(text, *(call.extra[n][i] for n in names)) for i, text in enumerate(call.texts)]

    def fanout(self, call: Call, per_item: dict[str, pa.Array]) -> dict[str, pa.Array]:
        """Per-item result columns spread over every row of ``call``."""
        if call.item_of_row == list(range(call.size)):
            return per_item
        take = pa.array(call.item_of_row, pa.int32())
        return {name: arr.take(take) for name, arr in per_item.items()}

    def columns(self, call: Call, result: Any) -> dict[str, pa.Array]:
        """Result columns for every row of ``call`` (items fanned out to their rows)."""
        return self.fanout(call, self.parse(call, result))

    def output_table(self, call: Call, per_item: dict[str, pa.Array]) -> pa.Table:
        """The output rows of ``call``: key, kept columns and result columns."""
        table = call.rows.to_arrow()
        for name, array in self.fanout(call, per_item).items():
            table = table.append_column(name, array)
        return table
