"""Rows → text items, shared by the text families (embed, classify, translate).

A row whose text is null or blank, or whose per-row options are refused, fails here before
any neuron is spent. Rows with the same text and options become one item (sent once, its
answer fanned out), tokens are counted once per item, and a text over the model's limit is
cut (``task.truncate``) or refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import polars as pl

from pipelines.catalog.models import ModelInfo
from pipelines.catalog.tokens import (
    HEAD_CHARS_PER_TOKEN,
    bounded_counts,
    model_tokens,
    truncate_to_tokens,
)
from pipelines.core.columns import KEY
from pipelines.core.errors import JobError
from pipelines.job.spec import Job
from pipelines.tasks.base import Item, Items, RowFailure, TextItem

# A row's options (name → raw value) → the normalised options, or why the row cannot be sent.
OptionCheck = Callable[[dict[str, Any]], dict[str, str | None] | str]
Options = tuple[tuple[str, str | None], ...]


def text_column(job: Job) -> str:
    """The column a text task reads (``task.input``)."""
    if not job.task.input:  # the job's checks require it; say so rather than crash
        raise JobError(f"task.input is required for {job.task.kind} jobs: name the text column")
    return job.task.input


def _distinct(
    batch: pl.DataFrame, column: str, options: Mapping[str, str], check: OptionCheck | None
) -> tuple[dict[tuple[str, Options], list[int]], list[RowFailure]]:
    """Distinct (text, options) in first-seen order with the rows of each, and refused rows."""
    texts: list[Any] = batch.get_column(column).to_list()
    keys: list[Any] = batch.get_column(KEY).to_list()
    raw = {name: batch.get_column(col).to_list() for name, col in options.items()}
    failures: list[RowFailure] = []
    found: dict[tuple[str, Options], list[int]] = {}
    for i, text in enumerate(texts):
        if text is None or not str(text).strip():
            message = f"column '{column}' is empty or null"
            failures.append(RowFailure(keys[i], "EmptyInput", message))
            continue
        opts: Options = ()
        if check is not None:
            checked = check({name: values[i] for name, values in raw.items()})
            if isinstance(checked, str):
                failures.append(RowFailure(keys[i], "InvalidOption", checked))
                continue
            opts = tuple(sorted(checked.items()))
        found.setdefault((str(text), opts), []).append(i)
    return found, failures


def text_items(
    batch: pl.DataFrame,
    model: ModelInfo,
    *,
    column: str,
    truncate: bool,
    options: Mapping[str, str] | None = None,
    check: OptionCheck | None = None,
) -> Items:
    """The batch's distinct text items, the rows each answers, and the rows refused.

    ``options`` maps an option name to the source column holding it per row; ``check``
    normalises a row's options or says why the row cannot be sent.
    """
    found, failures = _distinct(batch, column, options or {}, check)
    if not found:
        return Items(failures=tuple(failures))
    keys: list[Any] = batch.get_column(KEY).to_list()
    idents = list(found)
    counts = bounded_counts(model, [text for text, _ in idents])
    limit = model.max_input_tokens
    distinct: list[Item] = []
    rows_of: list[tuple[int, ...]] = []
    for (text, opts), (n, whole) in zip(idents, counts, strict=True):
        rows = found[(text, opts)]
        if limit is not None and n > limit:
            if not truncate:
                head = f"{limit * HEAD_CHARS_PER_TOKEN:,} characters"
                size = f"{n} tokens" if whole else f"more than {n} tokens (in its first {head})"
                message = (
                    f"{size} is over the model's limit of {limit}; "
                    "set task.truncate: true to cut long texts"
                )
                failures.extend(RowFailure(keys[i], "InputTooLong", message) for i in rows)
                continue
            text = truncate_to_tokens(model.tokenizer, text, limit)
            n = model_tokens(model, [text])[0]
        distinct.append(TextItem(text, n, opts))
        rows_of.append(tuple(rows))
    return Items(tuple(distinct), tuple(rows_of), tuple(failures))
