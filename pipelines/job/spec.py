"""The job file's shape as pydantic models (unknown keys are rejected everywhere).

Cross-field rules that need the catalog (model exists, model fits the task kind, language
codes) live in :mod:`pipelines.job.checks`; :mod:`pipelines.job.load` maps every problem to
its file and line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from pipelines.core.shard import Shard

SourceKind = Literal["csv", "parquet", "audio"]
JobTaskKind = Literal["embed", "classify", "translate", "transcribe", "generate", "image"]
ProviderName = Literal["auto", "cloudflare", "emulator", "local", "openai"]
RunMode = Literal["sync", "batch"]

DEFAULT_AUDIO_EXTENSIONS = ["wav", "mp3", "flac", "ogg", "m4a", "webm"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


REMOTE_SCHEME = "s3://"


def is_remote(path: str) -> bool:
    """Whether ``path`` is an object-storage URL (``s3://bucket/key``)."""
    return path.startswith(REMOTE_SCHEME)


def remote_mirror(url: str) -> Path:
    """The local mirror of ``s3://bucket/key``: ``<state dir>/remote/bucket/key``. Inputs
    are staged there and outputs journalled there, then uploaded whole."""
    from pipelines.core.state import state_dir

    return state_dir() / "remote" / url[len(REMOTE_SCHEME) :].lstrip("/")


class StorageSpec(_Strict):
    """Object storage for ``s3://`` paths (S3, or R2 through its S3 endpoint)."""

    endpoint_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="e.g. https://<account>.r2.cloudflarestorage.com (default: "
        "$AWS_ENDPOINT_URL, else AWS S3).",
    )
    region: str | None = Field(default=None, description="Default: the AWS settings' (R2: auto).")
    profile: str | None = Field(default=None, description="An AWS profile (default: $AWS_PROFILE).")


class SourceSpec(_Strict):
    """Where the rows come from."""

    kind: SourceKind = Field(description="csv | parquet | audio")
    path: str = Field(description="A file, a directory or a glob; relative to the job file.")
    key: str | None = Field(
        default=None,
        description="Column that identifies a row. Without it, a stable key is derived from "
        "the row's content (identical rows are then the same row).",
    )
    extensions: list[str] = Field(
        default_factory=lambda: list(DEFAULT_AUDIO_EXTENSIONS),
        description="audio only: file extensions to take.",
    )
    delimiter: str = Field(default=",", min_length=1, max_length=1, description="csv only.")
    encoding: Literal["utf8", "utf8-lossy"] = Field(default="utf8", description="csv only.")


class MessageSpec(_Strict):
    """One chat message of a generate job; ``content`` is a template."""

    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1, description="A template, e.g. 'Summarise: {{ text }}'.")


class TaskSpec(_Strict):
    """What to do with each row."""

    kind: JobTaskKind = Field(
        description="embed | classify | translate | transcribe | generate | image"
    )
    model: str = Field(
        description="A Workers AI model id (see `pipelines models`); with provider: openai, "
        "also any model the OpenAI-compatible server has (budget.daily_tokens or "
        "budget.daily_requests then caps it)."
    )
    input: str | None = Field(
        default=None, description="Column holding the text (not used for audio)."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Model options.")
    truncate: bool = Field(
        default=False,
        description="Cut texts over the model's token limit instead of failing the row.",
    )
    source_lang_column: str | None = Field(
        default=None, description="translate: per-row source language column."
    )
    target_lang_column: str | None = Field(
        default=None, description="translate: per-row target language column."
    )
    prompt: str | None = Field(
        default=None,
        description="generate: the user message; image: what to draw. A template ({{ column }}).",
    )
    negative_prompt: str | None = Field(
        default=None,
        description="image: what to keep out of the picture, a template (models that take one).",
    )
    seed_column: str | None = Field(
        default=None,
        description="image: a column with each row's seed (a whole number), so reruns reproduce.",
    )
    system: str | None = Field(
        default=None, description="generate: a system message (a template), with prompt."
    )
    messages: list[MessageSpec] | None = Field(
        default=None, description="generate: the whole conversation, instead of prompt."
    )
    output_schema: dict[str, Any] | str | None = Field(
        default=None,
        description="generate: a JSON Schema (inline, or the path of a .json file) the "
        "answer must match; sent in the model's JSON mode.",
    )

    def templates(self) -> list[str | None]:
        """generate and image: every template of the task (prompt, system, message
        contents, negative prompt)."""
        return [
            self.prompt,
            self.system,
            *(m.content for m in self.messages or []),
            self.negative_prompt,
        ]


class VectorizeSpec(_Strict):
    """embed: upsert each vector into a Cloudflare Vectorize index, besides the Parquet."""

    index: str = Field(
        pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=64, description="The index's name."
    )
    namespace: str | None = Field(
        default=None, min_length=1, max_length=64, description="Put the vectors in this namespace."
    )
    id: str | None = Field(
        default=None,
        description="The column whose value is a vector's id (default: the source key); "
        "a column of output.keep.",
    )
    metadata: list[str] = Field(
        default_factory=list,
        description="Columns of output.keep stored as each vector's metadata.",
    )


class OutputSpec(_Strict):
    """Where results go."""

    path: str = Field(description="The Parquet file to write; relative to the job file.")
    keep: list[str] = Field(default_factory=list, description="Input columns copied over.")
    vtt: bool = Field(default=False, description="transcribe: write .vtt files next to it.")
    srt: bool = Field(default=False, description="transcribe: write .srt files next to it.")
    images: str | None = Field(
        default=None,
        description="image: the folder the image files go to (relative to the job file); "
        "output.path is then their Parquet index.",
    )
    sync: bool = Field(
        default=False,
        description="Drop output rows whose key is no longer in the input (at the end of a "
        "run that read the whole input); with vectorize, delete their vectors too.",
    )
    vectorize: VectorizeSpec | None = Field(
        default=None, description="embed: also upsert the vectors into a Vectorize index."
    )


class LimitsSpec(_Strict):
    """How hard to push the API."""

    requests_per_minute: int | None = Field(
        default=None, gt=0, description="Default: the model's published limit."
    )
    concurrency: int = Field(default=16, gt=0, le=1024, description="Requests in flight.")
    max_attempts: int = Field(default=6, gt=0, le=50, description="Tries per request.")
    batch_size: int | None = Field(
        default=None, gt=0, description="Items per request; default the model's maximum."
    )
    timeout_s: float = Field(default=60.0, gt=0, description="Per-request timeout.")
    mode: RunMode = Field(
        default="sync",
        description="sync: one request at a time, answers at once. batch: Cloudflare's "
        "asynchronous Batch API (payloads queued, answers collected later; no capacity "
        "errors). Models with the Batch API only.",
    )
    batch_items: int = Field(
        default=500,
        gt=0,
        le=10_000,
        description="batch mode: the most requests in one Batch API payload (a payload is "
        "also at most 10 MB).",
    )


class BudgetSpec(_Strict):
    """How many neurons the job may spend (or, for a model outside the catalog, how many
    tokens or requests: then ``reserve`` and ``max_neurons`` count in that unit too)."""

    daily_neurons: int = Field(default=10_000, gt=0, description="The account's daily cap.")
    reserve: int = Field(default=0, ge=0, description="Neurons left for other use each day.")
    max_neurons: int | None = Field(default=None, gt=0, description="Cap for one run.")
    daily_tokens: int | None = Field(
        default=None,
        gt=0,
        description="provider openai, a model outside the catalog: input + output tokens a day.",
    )
    daily_requests: int | None = Field(
        default=None,
        gt=0,
        description="provider openai, a model outside the catalog: requests a day.",
    )

    def external_cap(self) -> tuple[str, int] | None:
        """``("tokens", N)`` or ``("requests", N)`` when the job caps a model outside the
        catalog in its own unit (the first given, if both are: the job checks refuse that)."""
        if self.daily_tokens is not None:
            return "tokens", self.daily_tokens
        if self.daily_requests is not None:
            return "requests", self.daily_requests
        return None


class Job(_Strict):
    """A whole job file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    priority: int = Field(default=0, description="Higher runs first in `pipelines run DIR`.")
    provider: ProviderName = "auto"
    base_url: str | None = Field(default=None, description="Override the API base URL.")
    source: SourceSpec
    task: TaskSpec
    output: OutputSpec
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)

    # Set by the loader, never by the YAML: the job file and the folder paths resolve against.
    _base_dir: Path = PrivateAttr(default=Path("."))
    _file: Path | None = PrivateAttr(default=None)
    # --shard I/N (issue 17): only that shard's rows, written to <output>/part-I-of-N.parquet
    _shard: Shard | None = PrivateAttr(default=None)

    def located(self, file: Path) -> Job:
        """Remember which file this job came from (relative paths resolve against it)."""
        self._file = file
        self._base_dir = file.resolve().parent
        return self

    @property
    def file(self) -> Path | None:
        """The job file, when loaded from one."""
        return self._file

    @property
    def base_dir(self) -> Path:
        """The folder relative paths resolve against."""
        return self._base_dir

    def resolve(self, path: str) -> Path:
        """A path from the job file, resolved against the job file's folder; an ``s3://``
        URL maps to its local mirror (:func:`remote_mirror`), which a run fills first."""
        if is_remote(path):
            return remote_mirror(path)
        p = Path(path).expanduser()
        # normalised (``jobs/../out`` is ``out``) so messages show the path people expect
        return Path(os.path.normpath(p if p.is_absolute() else self.base_dir / p))

    @property
    def shard(self) -> Shard | None:
        """The shard this job copy runs (:meth:`sharded`), or None for the whole input."""
        return self._shard

    def sharded(self, shard: Shard) -> Job:
        """A copy that runs only ``shard``'s rows into ``<output>/part-I-of-N.parquet``."""
        copy = self.model_copy()
        copy._shard = shard
        return copy

    @property
    def dataset_path(self) -> Path:
        """The output as the job file names it: a file, or the folder of a sharded run's
        parts."""
        return self.resolve(self.output.path)

    @property
    def output_path(self) -> Path:
        """The resolved output file (a shard's part inside the dataset folder)."""
        path = self.resolve(self.output.path)
        return path / self._shard.file_name if self._shard is not None else path

    @property
    def images_path(self) -> Path | None:
        """The resolved images folder (image jobs), else None."""
        return self.resolve(self.output.images) if self.output.images is not None else None
