"""The :class:`Source` interface and what every tabular source shares: file lists, column
checks, text normalisation, keys, de-duplication and re-batching.

A source streams: readers yield pieces of one file at a time and only the projected
columns are ever decoded, so memory depends on the batch size, not on the input size.
"""

from __future__ import annotations

import glob
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from pipelines.core.columns import KEY
from pipelines.core.errors import SourceError
from pipelines.core.shard import Shard
from pipelines.job.spec import Job
from pipelines.job.templates import template_columns
from pipelines.sources.keys import SeenKeys, derived_keys, given_keys

DEFAULT_BATCH_ROWS = 20_000


def needed_columns(job: Job) -> list[str]:
    """Input columns the job reads, in a fixed order (this order defines derived keys)."""
    task = job.task
    wanted = [
        task.input,
        job.source.key,
        task.source_lang_column,
        task.target_lang_column,
        *template_columns(task.templates()),
        task.seed_column,
        *job.output.keep,
    ]
    return list(dict.fromkeys(c for c in wanted if c))


def text_columns(job: Job) -> list[str]:
    """Columns handed to the model as text: they always come out as ``pl.Utf8``."""
    task = job.task
    cols = [task.input, task.source_lang_column, task.target_lang_column]
    return [c for c in cols if c]


def resolve_files(job: Job, suffixes: Sequence[str]) -> list[Path]:
    """``source.path`` as a sorted list of readable files (a file, a folder or a glob)."""
    spec = job.source.path
    full = job.resolve(spec)
    hint = f"paths are relative to the job file's folder, {job.base_dir}"
    if any(ch in spec for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(full), recursive=True))
        files = [f for f in files if f.is_file()]
        if not files:
            raise SourceError(f"source.path {spec!r} matches no files ({hint})")
    elif full.is_dir():
        # Recursive, for partitioned datasets; _SUCCESS/_metadata/.hidden files are not data.
        files = sorted(
            (
                f
                for f in full.rglob("*")
                if f.is_file()
                and f.name.lower().endswith(tuple(suffixes))
                and not any(part.startswith((".", "_")) for part in f.relative_to(full).parts)
            ),
            key=lambda f: f.relative_to(full).as_posix(),
        )
        if not files:
            raise SourceError(
                f"source.path {spec!r} is a folder with no {' / '.join(suffixes)} files in it"
            )
    elif full.is_file():
        files = [full]
    elif full.exists():
        # a FIFO would block the first read forever, a device may never end
        raise SourceError(
            f"source.path {spec!r} is not a regular file ({full}); point it at a file, "
            "a folder or a glob"
        )
    elif full.is_symlink():
        raise SourceError(
            f"source.path {spec!r} is a symbolic link that leads nowhere (broken, or a "
            f"loop: {full}); point it at the real file"
        )
    else:
        raise SourceError(f"source.path {spec!r}: no such file ({full}; {hint})")
    for f in files:
        if not os.access(f, os.R_OK):
            raise SourceError(f"{f}: permission denied; make the file readable")
    return files


def _rebatch(frames: Iterator[pl.DataFrame], rows: int) -> Iterator[pl.DataFrame]:
    """Frames of exactly ``rows`` rows (the last may be shorter), whatever came in."""
    pending: list[pl.DataFrame] = []
    held = 0
    for frame in frames:
        while frame.height:
            take = min(rows - held, frame.height)
            pending.append(frame.slice(0, take))
            held += take
            frame = frame.slice(take)
            if held == rows:
                yield pl.concat(pending, how="vertical_relaxed")
                pending, held = [], 0
    if held:
        yield pl.concat(pending, how="vertical_relaxed")


class Source(ABC):
    """Rows of a job's input, streamed in column-projected batches with a ``_key``."""

    def __init__(self, job: Job, files: list[Path]) -> None:
        self.job = job
        self.files = files
        self.needed = needed_columns(job)
        #: Rows dropped by the last :meth:`iter_batches` because their key came earlier.
        self.duplicate_keys = 0
        #: Only the rows of this shard (``--shard I/N``); the others are never read on.
        self.shard: Shard | None = None

    @abstractmethod
    def columns(self) -> list[str]:
        """Columns available in the input (those of the first file)."""

    @abstractmethod
    def count(self) -> int | None:
        """Total rows before de-duplication, when cheap to know."""

    @abstractmethod
    def _read(self, path: Path, columns: list[str], rows: int) -> Iterator[pl.DataFrame]:
        """Frames of at most ``rows`` rows of ``columns`` from one file, in order."""

    def check_columns(self, path: Path, available: Sequence[str]) -> None:
        """Raise a :class:`SourceError` naming the first needed column ``path`` lacks."""
        have = set(available)
        job = self.job
        roles = [
            (job.task.input, "task.input"),
            (job.source.key, "source.key"),
            (job.task.source_lang_column, "task.source_lang_column"),
            (job.task.target_lang_column, "task.target_lang_column"),
            *((c, "a template of the task") for c in template_columns(job.task.templates())),
            (job.task.seed_column, "task.seed_column"),
            *((c, "output.keep") for c in job.output.keep),
        ]
        for column, role in roles:
            if column and column not in have:
                names = [c if c.isprintable() else repr(c) for c in available[:20]]
                shown = ", ".join(names) + (", ..." if len(available) > 20 else "")
                raise SourceError(
                    f"{path}: no column {column!r} (named by {role}); "
                    f"the columns are: {shown or '(none)'}"
                )

    def _normalise(self, frame: pl.DataFrame) -> pl.DataFrame:
        casts = [pl.col(c).cast(pl.Utf8) for c in text_columns(self.job) if c in frame.columns]
        return frame.with_columns(casts) if casts else frame

    def _keyed(self, path: Path, frame: pl.DataFrame, offset: int) -> pl.DataFrame:
        key_col = self.job.source.key
        if key_col is None:
            keys, digests = derived_keys(frame, self.needed)
        else:
            keys, digests = self._given_keys(path, frame[key_col], offset)
        frame = frame.with_columns(keys.alias(KEY))
        if self.shard is not None:
            mine = self.shard.mask(digests)
            frame, digests = frame.filter(pl.Series(mine)), digests[mine]
        if self._seen is None:  # the caller finds repeated keys itself
            return frame
        fresh = self._seen.first_seen(digests)
        dropped = len(fresh) - int(fresh.sum())
        if dropped:
            self.duplicate_keys += dropped
            frame = frame.filter(pl.Series(fresh))
        return frame

    def _given_keys(
        self, path: Path, column: pl.Series, offset: int
    ) -> tuple[pl.Series, np.ndarray]:
        """The key column's values as text, or the located row that has no usable key."""
        name = column.name
        missing = column.is_null()
        if column.dtype.is_float():
            missing = missing | column.is_nan()  # NaN is how pandas writes a missing number
        if missing.any():
            row = offset + int(missing.arg_true()[0]) + 1
            raise SourceError(
                f"{path}: data row {row} has no value in the key column {name!r} "
                "(source.key); give every row a key, or drop source.key to derive keys "
                "from the content"
            )
        keys, digests = given_keys(column)
        undecodable = keys.is_null()
        if undecodable.any():
            row = offset + int(undecodable.arg_true()[0]) + 1
            raise SourceError(
                f"{path}: data row {row}: the key column {name!r} is not UTF-8 text; a key "
                "is the value as text: fix that value, or drop source.key to derive keys "
                "from the content"
            )
        return keys, digests

    def _frames(self, read: list[str], wanted: list[str], rows: int) -> Iterator[pl.DataFrame]:
        for path in self.files:
            offset = 0
            for piece in self._read(path, read, rows):
                height = piece.height
                # only what was asked for goes on: a column read just for the key (whose
                # type may differ between files) is never concatenated
                yield self._keyed(path, self._normalise(piece), offset).select([*wanted, KEY])
                offset += height

    def iter_batches(
        self, columns: Sequence[str], batch_rows: int = DEFAULT_BATCH_ROWS, *, unique: bool = True
    ) -> Iterator[pl.DataFrame]:
        """Batches of at most ``batch_rows`` rows: ``columns`` plus ``_key`` (``pl.Utf8``).

        With ``unique``, rows whose key already appeared are dropped (counted in
        :attr:`duplicate_keys`; the keys seen take 16 bytes each in memory). Without, every
        row comes, and the caller finds the repeats (the runner does, on disk).
        """
        if batch_rows <= 0:
            raise ValueError("batch_rows must be positive")
        wanted = [c for c in dict.fromkeys(columns) if c != KEY]
        missing = [c for c in wanted if c not in self.columns()]
        if missing:
            raise SourceError(f"{self.files[0]}: no column {missing[0]!r} in the input")
        read = list(dict.fromkeys([*self.needed, *wanted]))
        self._seen: SeenKeys | None = SeenKeys() if unique else None
        self.duplicate_keys = 0
        yield from _rebatch(self._frames(read, wanted, batch_rows), batch_rows)
