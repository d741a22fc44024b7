"""Audio file → transcript with the whisper models, one output row per file.

A file goes as it is when it is small and short enough; a longer one is cut
(:mod:`pipelines.media.chunking`) in :meth:`TranscribeTask.materialize`, which the runner runs in
a thread, so at most one file's chunks per worker are in memory. Each chunk is one request;
:meth:`TranscribeTask.combine` stitches the answers back into one transcript with
timestamps over the whole recording. The provider owns the wire format: the task always
hands it ``{"audio": <bytes>, **options}``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from pipelines.catalog.metering import Usage
from pipelines.catalog.models import ModelInfo
from pipelines.core.columns import KEY
from pipelines.core.errors import InvalidInput, TransportError
from pipelines.core.files import atomic_write
from pipelines.job.spec import Job
from pipelines.media.chunking import Transcript, chunk_seconds, cut, stitch
from pipelines.sources.audio import audio_root
from pipelines.tasks.base import Call, RowFailure, Task

MIB = 1024 * 1024
# Job params that pipelines reads itself (never sent to the model).
CHUNK_PARAMS = ("chunk_max_mb", "chunk_max_seconds")
# (MiB, seconds) above which a file is cut. Cloudflare's own turbo tutorial cuts at 1 MB;
# the raw-body models have no documented limit, so stay well under a 10 MB body.
DEFAULT_CHUNKING: dict[str, tuple[float, float]] = {"base64": (1.0, 600.0), "binary": (8.0, 600.0)}

WORD = pa.struct(
    [pa.field("word", pa.string()), pa.field("start", pa.float32()), pa.field("end", pa.float32())]
)
FIELDS = [
    pa.field("path", pa.string()),
    pa.field("duration_s", pa.float64()),
    pa.field("text", pa.string()),
    pa.field("word_count", pa.int32()),
    pa.field("language", pa.string()),
    pa.field("vtt", pa.string()),
    pa.field("words", pa.list_(WORD)),
]


def chunk_limits(model: ModelInfo, params: dict[str, Any]) -> tuple[int, float]:
    """Bytes and seconds above which a file is cut, from the job's params or the defaults."""
    mb, seconds = DEFAULT_CHUNKING["base64" if model.wire == "base64" else "binary"]
    return int(float(params.get("chunk_max_mb", mb)) * MIB), float(
        params.get("chunk_max_seconds", seconds)
    )


def subtitles_dir(output: Path) -> Path:
    """``<output stem>.subtitles`` next to the output file."""
    return output.with_name(f"{output.stem}.subtitles")


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)


class TranscribeTask(Task):
    """Audio files → ``path, duration_s, text, word_count, language, vtt, words``."""

    # A row is identified by its path, size and duration, not by its content: two different
    # recordings share all three often enough (fixed-length WAV clips) to poison a cache.
    cacheable = False

    def __init__(self, job: Job, model: ModelInfo, keep: list[str]) -> None:
        super().__init__(job, model, keep)
        self.batch_size = 1
        self.max_bytes, self.max_seconds = chunk_limits(model, self.params)
        self.chunk_s = chunk_seconds(self.max_bytes, self.max_seconds)
        self.options = {k: v for k, v in self.params.items() if k not in CHUNK_PARAMS}
        self.root = audio_root(job)
        # tiny-en only knows English; whisper does not say; turbo reports what it heard
        self.language: str | None = "en" if model.id.endswith("-tiny-en") else None
        if isinstance(self.options.get("language"), str):
            self.language = self.options["language"]

    @property
    def result_fields(self) -> list[pa.Field]:
        return [f for f in FIELDS if f.name not in self.keep]

    def input_columns(self) -> list[str]:
        return ["path", "size_bytes", "duration_s", "error"]

    def inputs_for(self, texts: list[str], extra: dict[str, list[Any]]) -> dict[str, Any]:
        return {"file": str(self.root / texts[0])}  # the audio itself is read in materialize

    def estimate(self, tokens: list[int]) -> Usage:
        return Usage()  # calls carry their audio seconds; see prepare

    def worst_case(self, usage: Usage) -> Usage:
        # a header can understate the length (VBR MP3 without a Xing frame); the cap must hold
        return Usage(audio_seconds=usage.audio_seconds * 1.1 + 1.0)

    def prepare(self, batch: pl.DataFrame) -> tuple[list[Call], list[RowFailure]]:
        """One call per readable file; unreadable and empty files fail here, for free."""
        cols = {c: batch.get_column(c).to_list() for c in [KEY, *self.input_columns()]}
        rows = batch.select([KEY, *self.keep])
        calls: list[Call] = []
        failures: list[RowFailure] = []
        for i, path in enumerate(cols["path"]):
            key, error, duration = cols[KEY][i], cols["error"][i], cols["duration_s"][i]
            if error is not None:
                failures.append(RowFailure(key, "UnreadableAudio", f"{path}: {error}"))
                continue
            if duration is None or duration <= 0:
                failures.append(RowFailure(key, "EmptyAudio", f"{path}: contains no audio"))
                continue
            extra = {"size_bytes": [cols["size_bytes"][i]], "duration_s": [float(duration)]}
            calls.append(
                Call(
                    texts=[path],
                    tokens=[0],
                    extra=extra,
                    rows=rows.slice(i, 1),
                    item_of_row=[0],
                    inputs=self.inputs_for([path], extra),
                    usage=Usage(audio_seconds=float(duration)),
                )
            )
        return calls, failures

    def _needs_cut(self, call: Call) -> bool:
        size, duration = call.extra["size_bytes"][0], call.extra["duration_s"][0]
        return bool(size > self.max_bytes or duration > self.max_seconds)

    def requests_for(self, call: Call) -> int:
        """How many requests :meth:`materialize` will make for ``call`` (for ``plan``)."""
        if not self._needs_cut(call):
            return 1
        return max(1, math.ceil(float(call.extra["duration_s"][0]) / self.chunk_s))

    def split(self, call: Call, at: int) -> tuple[Call, Call]:
        raise AssertionError("transcribe calls carry one file and are never split")

    # -- sending -------------------------------------------------------------------------

    def materialize(self, call: Call) -> list[dict[str, Any]]:
        """The file as one request, or one request per chunk when it is too big or long."""
        rel = call.texts[0]
        path = self.root / rel
        try:
            if not self._needs_cut(call):
                blobs, spans = [path.read_bytes()], [(0.0, call.extra["duration_s"][0])]
            else:
                chunks = cut(path, self.chunk_s)
                blobs = [c.data for c in chunks]
                spans = [(c.start_s, c.duration_s) for c in chunks]
        except OSError as exc:
            raise InvalidInput(f"{rel}: cannot read the file: {exc.strerror or exc}") from None
        except Exception as exc:  # PyAV raises many types for damaged data
            raise InvalidInput(f"{rel}: cannot decode the audio: {exc}") from None
        if not blobs:
            raise InvalidInput(f"{rel}: no decodable audio in it")
        call.extra["spans"] = [spans]  # for combine and usage_of
        return [{"audio": blob, **self.options} for blob in blobs]

    def usage_of(self, call: Call, results: list[Any]) -> Usage:
        """The audio seconds of the requests that got an answer (what Cloudflare bills)."""
        spans = call.extra.get("spans", [[]])[0]
        return Usage(audio_seconds=sum(length for _, length in spans[: len(results)]))

    def actual(self, call: Call, result: Any) -> Usage:
        return self.usage_of(call, [result])

    def combine(self, call: Call, results: list[Any]) -> Any:
        """One transcript over the whole file; subtitles written next to the output."""
        for result in results:
            if not isinstance(result, dict) or not isinstance(result.get("text"), str):
                raise TransportError(f"{self.model.id} answered without a text transcript")
        transcript = stitch(results, call.extra["spans"][0])
        if transcript.language is None:
            transcript.language = self.language
        folder = subtitles_dir(self.job.output_path)
        if self.job.output.vtt:
            _write_atomic(folder / f"{call.texts[0]}.vtt", transcript.vtt())
        if self.job.output.srt:
            _write_atomic(folder / f"{call.texts[0]}.srt", transcript.srt())
        return transcript

    def parse(self, call: Call, result: Any) -> dict[str, pa.Array]:
        assert isinstance(result, Transcript)
        words = [{"word": w.word, "start": w.start, "end": w.end} for w in result.words]
        values: dict[str, Any] = {
            "path": call.texts[0],
            "duration_s": call.extra["duration_s"][0],
            "text": result.text,
            "word_count": result.word_count,
            "language": result.language,
            "vtt": result.vtt(),
            "words": words,
        }
        return {f.name: pa.array([values[f.name]], f.type) for f in self.result_fields}
