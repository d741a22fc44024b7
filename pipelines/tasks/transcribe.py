"""Audio file → transcript with the whisper models, one output row per file.

A call carries one file as a :class:`~pipelines.sources.audio.MediaRef`: its path, size and
duration, and where it must be cut (a file above the model's size or length limit). The
runner loads it (:func:`pipelines.sources.audio.load_media`, in a thread) and the family
makes one request per chunk, then stitches the answers into one transcript with timestamps
over the whole recording. The provider owns the wire format: each request is
``{"audio": <bytes>, **options}``. Subtitle files are written by the output side
(:mod:`pipelines.output.subtitles`) from the ``vtt`` column.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import polars as pl
import pyarrow as pa

from pipelines.catalog.metering import Usage
from pipelines.catalog.models import ModelInfo
from pipelines.core.columns import KEY
from pipelines.job.spec import Job
from pipelines.media.chunking import chunk_seconds, stitch
from pipelines.sources.audio import Media, MediaRef
from pipelines.tasks.answers import check_for
from pipelines.tasks.base import Call, Estimate, Item, Items, Requests, RowFailure

MIB = 1024 * 1024
# Job params that pipelines reads itself (never sent to the model).
CHUNK_PARAMS = ("chunk_max_mb", "chunk_max_seconds")
# (MiB, seconds) above which a file is cut. Cloudflare's own turbo tutorial cuts at 1 MB;
# the raw-body models have no documented limit, so stay well under a 10 MB body.
DEFAULT_CHUNKING: dict[str, tuple[float, float]] = {"base64": (1.0, 600.0), "binary": (8.0, 600.0)}
INPUT_COLUMNS = ("path", "size_bytes", "duration_s", "error")

WORD = pa.struct(
    [pa.field("word", pa.string()), pa.field("start", pa.float32()), pa.field("end", pa.float32())]
)
FIELDS = (
    pa.field("path", pa.string()),
    pa.field("duration_s", pa.float64()),
    pa.field("text", pa.string()),
    pa.field("word_count", pa.int32()),
    pa.field("language", pa.string()),
    pa.field("vtt", pa.string()),
    pa.field("words", pa.list_(WORD)),
)


def chunk_limits(model: ModelInfo, params: dict[str, Any]) -> tuple[int, float]:
    """Bytes and seconds above which a file is cut, from the job's params or the defaults."""
    mb, seconds = DEFAULT_CHUNKING["base64" if model.wire == "base64" else "binary"]
    return int(float(params.get("chunk_max_mb", mb)) * MIB), float(
        params.get("chunk_max_seconds", seconds)
    )


class TranscribeFamily:
    """Audio files → ``path, duration_s, text, word_count, language, vtt, words``."""

    # A row is identified by its path, size and duration, not by its content: two different
    # recordings share all three often enough (fixed-length WAV clips) to poison a cache.
    cacheable = False

    def __init__(self, job: Job, model: ModelInfo, keep: Sequence[str]) -> None:
        self.model = model
        params = dict(job.task.params)
        self.max_bytes, self.max_seconds = chunk_limits(model, params)
        self.chunk_s = chunk_seconds(self.max_bytes, self.max_seconds)
        self.options = {k: v for k, v in params.items() if k not in CHUNK_PARAMS}
        # tiny-en only knows English; whisper does not say; turbo reports what it heard
        self.language: str | None = "en" if model.id.endswith("-tiny-en") else None
        if isinstance(self.options.get("language"), str):
            self.language = self.options["language"]
        self.fields: tuple[pa.Field, ...] = tuple(f for f in FIELDS if f.name not in keep)
        self.columns: tuple[str, ...] = INPUT_COLUMNS

    def items(self, batch: pl.DataFrame) -> Items:
        """One item per readable file; unreadable and empty files fail here, for free."""
        cols = {c: batch.get_column(c).to_list() for c in (KEY, *INPUT_COLUMNS)}
        distinct: list[Item] = []
        rows_of: list[tuple[int, ...]] = []
        failures: list[RowFailure] = []
        for i, path in enumerate(cols["path"]):
            key, error, duration = cols[KEY][i], cols["error"][i], cols["duration_s"][i]
            if error is not None:
                failures.append(RowFailure(key, "UnreadableAudio", f"{path}: {error}"))
            elif duration is None or duration <= 0:
                failures.append(RowFailure(key, "EmptyAudio", f"{path}: contains no audio"))
            else:
                size = int(cols["size_bytes"][i])
                too_big = size > self.max_bytes or duration > self.max_seconds
                cut_s = self.chunk_s if too_big else None
                distinct.append(MediaRef(path, size, float(duration), cut_s))
                rows_of.append((i,))
        return Items(tuple(distinct), tuple(rows_of), tuple(failures))

    def estimate(self, items: Sequence[Item]) -> Estimate:
        seconds = sum(i.duration_s for i in items if isinstance(i, MediaRef))
        # a header can understate the length (VBR MP3 without a Xing frame); the cap must hold
        return Estimate(Usage(audio_seconds=seconds), Usage(audio_seconds=seconds * 1.1 + 1.0))

    def requests(self, call: Call, media: Sequence[Media]) -> Requests:
        """One request per chunk of the call's file."""
        (loaded,) = media
        chunks = loaded.chunks
        bodies = tuple(MappingProxyType({"audio": c.data, **self.options}) for c in chunks)
        return Requests(call, bodies, tuple((c.start_s, c.duration_s) for c in chunks))

    def parse(self, requests: Requests, answers: Sequence[Any]) -> dict[str, pa.Array]:
        """One transcript over the whole file, from every chunk's answer."""
        check = check_for(self.model, "object", ("text",))
        for answer in answers:
            check(answer)
        transcript = stitch(answers, requests.spans)
        if transcript.language is None:
            transcript = dataclasses.replace(transcript, language=self.language)
        (ref,) = requests.call.media()
        values: dict[str, Any] = {
            "path": ref.path,
            "duration_s": ref.duration_s,
            "text": transcript.text,
            "word_count": transcript.word_count,
            "language": transcript.language,
            "vtt": transcript.vtt(),
            "words": [{"word": w.word, "start": w.start, "end": w.end} for w in transcript.words],
        }
        return {f.name: pa.array([values[f.name]], f.type) for f in self.fields}

    def usage(self, requests: Requests, answers: Sequence[Any]) -> Usage:
        """The audio seconds of the requests that got an answer (what Cloudflare bills)."""
        return Usage(audio_seconds=sum(length for _, length in requests.spans[: len(answers)]))
