"""The task protocol: what one task family (embed, classify, translate, transcribe) implements.

A family is pure: no files, no network, no clock. Everything it returns is an immutable
value; nothing it is given is changed. It implements :class:`Family`, three attributes and
five methods:

``fields``
    The Arrow fields it adds to each output row (``embedding``; ``label, score``; ...).
``columns``
    The source columns it reads (the input text, per-row option columns, audio metadata).
``cacheable``
    Whether an identical item may be answered from the result cache (text items only).
``items(batch) -> Items``
    A batch of pending rows as distinct :class:`TextItem`/:class:`MediaRef` items, the rows
    each one answers, and :class:`RowFailure`\\ s for rows that cannot be sent at all (empty
    text, unknown language, unreadable file): refused before any neuron is spent. Identical
    items appear once, so a repeated text is never paid twice.
``estimate(items) -> Estimate``
    The usage expected for one request carrying ``items``, and the worst case reserved for
    it in the budget (above the expectation where the real figure can be higher).
``requests(call, media) -> Requests``
    The request bodies that answer ``call`` and what reading the answers needs (the time span
    of each audio chunk). ``media`` is the call's audio, loaded by the runner in a thread
    with :func:`pipelines.sources.audio.load_media` (empty for text calls).
``parse(requests, answers) -> dict[str, pa.Array]``
    The result columns, one value per item of the call, from the answers to ``requests``.
    Every answer is checked against the model's published output schema first
    (:mod:`pipelines.tasks.answers`); one that breaks it raises ``TransportError`` (its rows
    fail as retryable, nothing is stored or cached).
``usage(requests, answers) -> Usage``
    What the requests that got ``answers`` consumed (what Cloudflare bills), also when some
    are missing or an answer is invalid.

Everything families share (packing items into calls of the model's batch size, splitting a
call, fanning item results out to rows, cache identities, output tables) is done once for all
by :class:`pipelines.tasks.task.Task`, which wraps a family for one job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import polars as pl
import pyarrow as pa

from pipelines.catalog.metering import Usage
from pipelines.core.columns import KEY, ROW_HASH
from pipelines.sources.audio import Media, MediaRef


@dataclass(frozen=True)
class TextItem:
    """A text sent to the model, its token count, and its per-row options (sorted by name)."""

    text: str
    tokens: int
    options: tuple[tuple[str, str | None], ...] = ()

    def option(self, name: str) -> str | None:
        return dict(self.options).get(name)


Item = TextItem | MediaRef


@dataclass(frozen=True)
class Estimate:
    """What a request is expected to consume, and what the budget reserves for it."""

    expected: Usage
    worst: Usage


@dataclass(frozen=True)
class Call:
    """One model call: the distinct items it sends and every row that gets their results.

    ``rows[i]`` gets the result of ``items[item_of_row[i]]``. Never changed once made:
    splitting or subsetting makes new calls.
    """

    items: tuple[Item, ...]
    rows: pl.DataFrame = field(repr=False)  # the key column plus kept columns
    item_of_row: tuple[int, ...]
    estimate: Estimate

    @property
    def size(self) -> int:
        return len(self.items)

    @property
    def usage(self) -> Usage:
        """The usage expected (estimated before sending)."""
        return self.estimate.expected

    def keys(self) -> list[str]:
        """The row keys this call answers."""
        return [str(k) for k in self.rows.get_column(KEY).to_list()]

    def row_hashes(self) -> list[str | None]:
        """The content hash of each row (None where the rows carry none)."""
        if ROW_HASH not in self.rows.columns:
            return [None] * self.rows.height
        return list(self.rows.get_column(ROW_HASH).to_list())

    def texts(self) -> list[TextItem]:
        """The items as texts (a text family's calls carry nothing else)."""
        out = [i for i in self.items if isinstance(i, TextItem)]
        if len(out) != len(self.items):
            raise TypeError("this call carries media, not texts")
        return out

    def media(self) -> tuple[MediaRef, ...]:
        """The items that are audio files, for the runner to load before sending."""
        return tuple(i for i in self.items if isinstance(i, MediaRef))


@dataclass(frozen=True)
class Requests:
    """The requests that answer a call, in order, and what reading their answers needs."""

    call: Call
    bodies: tuple[Mapping[str, Any], ...]  # read-only views; audio is bytes under "audio"
    spans: tuple[tuple[float, float], ...] = ()  # audio: (start, length) of each request


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
    row_hash: str | None = None  # the content the failure is about (see core.columns)


@dataclass(frozen=True)
class Items:
    """What a family made of a batch of rows.

    ``distinct[i]`` answers the batch rows ``rows_of[i]`` (in first-seen order); rows in
    ``failures`` are in neither.
    """

    distinct: tuple[Item, ...] = ()
    rows_of: tuple[tuple[int, ...], ...] = ()
    failures: tuple[RowFailure, ...] = ()


class Family(Protocol):
    """One task family; see the module docstring for what each member returns."""

    fields: tuple[pa.Field, ...]
    columns: tuple[str, ...]
    cacheable: bool

    def items(self, batch: pl.DataFrame) -> Items: ...

    def estimate(self, items: Sequence[Item]) -> Estimate: ...

    def requests(self, call: Call, media: Sequence[Media]) -> Requests: ...

    def parse(self, requests: Requests, answers: Sequence[Any]) -> dict[str, pa.Array]: ...

    def usage(self, requests: Requests, answers: Sequence[Any]) -> Usage: ...
