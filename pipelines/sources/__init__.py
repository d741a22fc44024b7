"""Job inputs: CSV, Parquet and audio files streamed as keyed, column-projected batches.

``open_source(job)`` checks everything it can up front (files exist, are readable and
parse, every column the job names is there) so a job fails before it spends neurons.
"""

from __future__ import annotations

from pipelines.core.columns import KEY
from pipelines.core.errors import SourceError
from pipelines.job.spec import Job
from pipelines.sources import audio, csv, parquet
from pipelines.sources.base import (
    DEFAULT_BATCH_ROWS,
    Source,
    needed_columns,
    resolve_files,
)


def open_source(job: Job, *, stage: bool = True) -> Source:
    """The job's input, checked and ready to stream; raises :class:`SourceError`. An
    ``s3://`` path is staged into its local mirror first (:mod:`pipelines.sources.remote`),
    unless ``stage`` is false (``status``: no network), when the mirror is read as it is."""
    from pipelines.sources.remote import stage_source

    if stage:
        stage_source(job)
    kind = job.source.kind
    source: Source
    if kind == "csv":
        source = csv.CsvSource(job, resolve_files(job, csv.SUFFIXES))
    elif kind == "parquet":
        source = parquet.ParquetSource(job, resolve_files(job, parquet.SUFFIXES))
    elif kind == "audio":
        source = audio.AudioSource(job)
    else:
        raise SourceError(f"{kind} sources are not supported yet")
    source.shard = job.shard  # --shard I/N: only that shard's rows
    return source


__all__ = [
    "DEFAULT_BATCH_ROWS",
    "KEY",
    "Source",
    "needed_columns",
    "open_source",
]
