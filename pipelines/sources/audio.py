"""Audio input: a folder (searched recursively) or a glob of audio files, one row per file.

Listing is cheap and done up front (the count and the sort order need it); probing reads
headers and is done batch by batch as rows are asked for, so a folder of 100k recordings
starts sending after a few dozen probes. A file that cannot be read or is not audio is a
row with ``error`` set, never an exception: the task turns it into a failure row.

A task refers to a file by a :class:`MediaRef` (no bytes); :func:`load_media`, which the
runner calls in a thread just before sending, reads it whole or cuts it into chunks
(:mod:`pipelines.media.chunking`), so at most one file's chunks per worker are in memory.
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.core.columns import KEY
from pipelines.core.errors import InvalidInput, SourceError
from pipelines.job.spec import Job
from pipelines.media.audio import probe_file
from pipelines.media.chunking import Chunk, cut
from pipelines.sources.base import DEFAULT_BATCH_ROWS, Source

SCHEMA: dict[str, Any] = {
    "path": pl.Utf8,
    "size_bytes": pl.Int64,
    "duration_s": pl.Float64,
    "format": pl.Utf8,
    "error": pl.Utf8,
}
COLUMNS = list(SCHEMA)
# Probes per batch: small enough that the first requests go out at once.
PROBE_BATCH = 64


def _is_glob(spec: str) -> bool:
    return any(ch in spec for ch in "*?[")


def audio_root(job: Job) -> Path:
    """The folder ``path`` values are relative to (for a glob, its fixed leading folders)."""
    full = job.resolve(job.source.path)
    if _is_glob(job.source.path):
        fixed: list[str] = []
        for part in full.parts:
            if _is_glob(part):
                break
            fixed.append(part)
        return Path(*fixed)
    return full if full.is_dir() else full.parent


def _suffixes(job: Job) -> tuple[str, ...]:
    return tuple("." + e.lower().lstrip(".") for e in job.source.extensions)


def list_audio(job: Job) -> tuple[Path, list[str]]:
    """The root folder and the audio files under it (relative posix paths, sorted)."""
    spec = job.source.path
    full = job.resolve(spec)
    root = audio_root(job)
    suffixes = _suffixes(job)
    hint = f"paths are relative to the job file's folder, {job.base_dir}"
    if _is_glob(spec):
        found = [Path(p) for p in glob.glob(str(full), recursive=True)]
    elif full.is_dir():
        found = []
        for folder, dirs, names in os.walk(full):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found.extend(Path(folder, name) for name in names)
    elif full.is_file():
        return root, [full.name]  # named explicitly: taken whatever its extension
    else:
        raise SourceError(f"source.path {spec!r}: no such file or folder ({full}; {hint})")
    rels: list[str] = []
    for f in found:
        rel = f.relative_to(root).as_posix()
        # .hidden files are metadata (macOS ._ forks, editor swap files), not recordings
        hidden = any(part.startswith(".") for part in rel.split("/"))
        if not hidden and f.name.lower().endswith(suffixes) and f.is_file():
            rels.append(rel)
    rels.sort()
    if not rels:
        wanted = ", ".join(s.lstrip(".") for s in suffixes)
        raise SourceError(f"source.path {spec!r} has no audio files ({wanted}) in it ({hint})")
    return root, rels


def probe_row(root: Path, rel: str) -> dict[str, Any]:
    """The row of one file: size, duration and format, or the reason it is unusable."""
    path = root / rel
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row["path"] = rel
    try:
        row["size_bytes"] = size = path.stat().st_size
    except OSError as exc:
        row["error"] = f"cannot read the file: {exc.strerror or exc}"
        return row
    if size == 0:
        row["error"] = "empty file (0 bytes)"
    elif not os.access(path, os.R_OK):
        row["error"] = "cannot read the file: permission denied"
    else:
        try:
            info = probe_file(path)
        except SourceError as exc:
            detail = exc.message.split(f"{path}: ", 1)[-1]
            row["error"] = f"not readable as audio ({detail})"
            return row
        if info.duration_s <= 0:
            row["error"] = "contains no audio (0 s)"
        row["duration_s"] = info.duration_s
        row["format"] = info.format
    return row


class AudioSource(Source):
    """Audio files as rows ``path, size_bytes, duration_s, format, error``; ``_key`` = path."""

    def __init__(self, job: Job) -> None:
        root, rels = list_audio(job)
        super().__init__(job, [root / r for r in rels])
        self.root = root
        self.rels = rels
        self.check_columns(root, COLUMNS)

    def columns(self) -> list[str]:
        return list(COLUMNS)

    def count(self) -> int:
        """Files found (before probing: unreadable ones are rows too)."""
        return len(self.rels)

    def _read(self, path: Path, columns: list[str], rows: int) -> Iterator[pl.DataFrame]:
        rel = path.relative_to(self.root).as_posix()
        yield pl.DataFrame([probe_row(self.root, rel)], schema=SCHEMA).select(columns)

    def iter_batches(
        self, columns: Sequence[str], batch_rows: int = DEFAULT_BATCH_ROWS, *, unique: bool = True
    ) -> Iterator[pl.DataFrame]:
        """Batches of at most ``min(batch_rows, PROBE_BATCH)`` files, probed as they are read
        (relative paths are unique whatever ``unique`` says)."""
        if batch_rows <= 0:
            raise ValueError("batch_rows must be positive")
        wanted = [c for c in dict.fromkeys(columns) if c != KEY]
        missing = [c for c in wanted if c not in SCHEMA]
        if missing:
            raise SourceError(
                f"audio sources have no column {missing[0]!r}; they have: {', '.join(COLUMNS)}"
            )
        step = min(batch_rows, PROBE_BATCH)
        self.duplicate_keys = 0  # relative paths are unique
        for i in range(0, len(self.rels), step):
            rows = [probe_row(self.root, rel) for rel in self.rels[i : i + step]]
            frame = pl.DataFrame(rows, schema=SCHEMA)
            yield frame.with_columns(pl.col("path").alias(KEY)).select([*wanted, KEY])


# -- loading a file for sending --------------------------------------------------------------


@dataclass(frozen=True)
class MediaRef:
    """One audio file of the source as a task item: what it is, not its bytes."""

    path: str  # relative to the source's root folder (also the row's key)
    size_bytes: int
    duration_s: float
    cut_s: float | None = None  # cut into chunks of at most this many seconds; None: whole

    def chunks_expected(self) -> int:
        """How many requests the file will take (for ``plan``)."""
        if self.cut_s is None:
            return 1
        return max(1, math.ceil(self.duration_s / self.cut_s))


@dataclass(frozen=True)
class Media:
    """A file's audio as it is sent: the whole file as one chunk, or its consecutive pieces."""

    ref: MediaRef
    chunks: tuple[Chunk, ...] = field(repr=False)


def load_one(root: Path, ref: MediaRef) -> Media:
    """``ref``'s audio; a file that changed or vanished since the probe is an InvalidInput."""
    path = root / ref.path
    try:
        if ref.cut_s is None:
            chunks: tuple[Chunk, ...] = (Chunk(0.0, ref.duration_s, path.read_bytes()),)
        else:
            chunks = tuple(cut(path, ref.cut_s))
    except OSError as exc:
        raise InvalidInput(f"{ref.path}: cannot read the file: {exc.strerror or exc}") from None
    except Exception as exc:  # PyAV raises many types for damaged data
        raise InvalidInput(f"{ref.path}: cannot decode the audio: {exc}") from None
    if not chunks:
        raise InvalidInput(f"{ref.path}: no decodable audio in it")
    return Media(ref, chunks)


def load_media(job: Job, refs: Sequence[MediaRef]) -> tuple[Media, ...]:
    """The audio of ``refs`` (files of ``job``'s source), read or cut; blocking I/O."""
    if not refs:
        return ()
    root = audio_root(job)
    return tuple(load_one(root, ref) for ref in refs)
