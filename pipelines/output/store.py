"""Durable, exactly-once output: a journal while running, one atomic Parquet file at the end.

While a run works, every arriving result is appended to an Arrow IPC *journal* in a work
folder next to the output (``.<name>.pipelines/``) and fsync'ed, so a crash or ``kill -9``
loses at most the requests in flight. A torn last record is detected and ignored on
recovery. At the end of a run (finished, stopped by the budget or interrupted) the previous
output and the journals are merged into a temporary file that atomically replaces the
output; the journals it consumed are named in its metadata, so a crash between the rename
and their deletion never counts a row twice. Rows are identified by the ``_key`` column.

Every path comes from :func:`pipelines.job.paths.job_paths`. Opening first checks, without
writing, that the files already there are this job's (:mod:`pipelines.output.ownership`);
only then does ``--fresh`` remove what pipelines made (:mod:`pipelines.output.fresh`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.columns import KEY
from pipelines.core.errors import OutputError
from pipelines.core.files import atomic_path, atomic_write, tmp_pattern
from pipelines.core.secrets import mask, secret_values
from pipelines.job.paths import job_paths
from pipelines.output.fresh import remove_made_files
from pipelines.output.identity import Fingerprint
from pipelines.output.identity import fingerprint as fingerprint
from pipelines.output.journal import Journal, read_journal
from pipelines.output.ownership import META_PREFIX, check_ownership, file_metadata
from pipelines.tasks.base import RowFailure

SCHEMA_VERSION = "1"
ROW_GROUP_ROWS = 65_536

FAILURE_SCHEMA = pa.schema(
    [
        pa.field(KEY, pa.string()),
        pa.field("error", pa.string()),
        pa.field("code", pa.int32()),
        pa.field("status", pa.int32()),
        pa.field("message", pa.string()),
        pa.field("attempts", pa.int32()),
        pa.field("retryable", pa.bool_()),
        pa.field("run_id", pa.string()),
        pa.field("failed_at", pa.timestamp("ms", tz="UTC")),
    ]
)


def failures_path_for(output: Path) -> Path:
    """``<output stem>.failures.parquet`` next to the output."""
    return job_paths(output).failures


def _is_journal_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and Path(name).name == name
        and name.startswith(("results-", "failures-"))
        and name.endswith(".arrow")
    )


class OutputStore:
    """The output of one job: final Parquet file, failures file and the work folder."""

    def __init__(self, path: Path, *, fingerprint: Fingerprint, meta: dict[str, str]) -> None:
        self.path = path
        self.paths = job_paths(path)
        self.failures_path = self.paths.failures
        self.work = self.paths.work
        self.fingerprint = fingerprint
        self.meta = meta
        self._results: Journal | None = None
        self._failures: Journal | None = None
        self.run_id = ""

    # -- opening -------------------------------------------------------------------------

    def open(self, *, fresh: bool) -> None:
        """Check the output can be written and belongs to this job; recover earlier runs.

        Every check comes first and only reads; ``--fresh`` then removes exactly what
        pipelines made (:mod:`pipelines.output.fresh`)."""
        check_ownership(self.paths, self.fingerprint, fresh=fresh)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.work.mkdir(exist_ok=True)
            probe = self.work / f".probe-{os.getpid()}"
            probe.write_bytes(b"ok")
            probe.unlink()
            if fresh:
                remove_made_files(self.paths)
        except OSError as exc:
            raise OutputError(
                f"cannot write to {self.path.parent} ({exc.strerror or exc}); "
                "choose a writable output.path"
            ) from exc
        self._sweep_temporary_files()
        self._drop_consumed()
        meta = {
            "fingerprint": self.fingerprint.digest,
            "identity": json.dumps(self.fingerprint.parts),
            "schema_version": SCHEMA_VERSION,
        }
        try:
            atomic_write(self.work / "meta.json", json.dumps(meta))
        except OSError as exc:
            raise OutputError(
                f"cannot write to {self.work} ({exc.strerror or exc}); free some space or "
                "choose a writable output.path"
            ) from exc

    def _sweep_temporary_files(self) -> None:
        """What a crash in the middle of an atomic write left behind (this and older
        versions' names)."""
        for target in (self.path, self.failures_path, self.work / "meta.json"):
            for tmp in target.parent.glob(tmp_pattern(target)):
                tmp.unlink(missing_ok=True)
        for old in (*self.work.glob(f".{self.path.name}.tmp-*"), self.work / "meta.json.tmp"):
            old.unlink(missing_ok=True)

    def _drop_consumed(self) -> None:
        for path in (self.path, self.failures_path):
            if path.exists():
                try:
                    names = json.loads(file_metadata(path).get("consumed", "[]"))
                except ValueError:
                    names = []
                for name in names if isinstance(names, list) else []:
                    # a journal of the work folder, whatever else the metadata may say
                    if _is_journal_name(name):
                        (self.work / name).unlink(missing_ok=True)

    def has_journals(self) -> bool:
        """Whether any run left results or failures that are not in the output yet."""
        return bool(self._journals("results") or self._journals("failures"))

    def _journals(self, kind: str) -> list[Path]:
        return sorted(self.work.glob(f"{kind}-*.arrow"))

    # -- what is done --------------------------------------------------------------------

    def done_keys(self, *, retry_failed: bool) -> pl.DataFrame:
        """Keys that must not be sent again: results, and permanent failures."""
        parts: list[pa.Array] = []
        if self.path.exists():
            parts.extend(pq.read_table(self.path, columns=[KEY]).column(KEY).chunks)
        for journal in self._journals("results"):
            parts.extend(b.column(KEY) for b in read_journal(journal))
        failures = self.failures()
        if failures.height and not retry_failed:
            # transient failures (retries ran out) are tried again on every run
            permanent = failures.filter(~pl.col("retryable"))
            parts.append(permanent.get_column(KEY).to_arrow())
        if not parts:
            return pl.DataFrame({KEY: []}, schema={KEY: pl.Utf8})
        keys = pa.chunked_array([p.cast(pa.string()) for p in parts], type=pa.string())
        frame = pl.from_arrow(pa.table({KEY: keys}))
        assert isinstance(frame, pl.DataFrame)
        return frame.unique(KEY)

    def failures(self) -> pl.DataFrame:
        """Every recorded failure, latest per key."""
        tables: list[pa.Table] = []
        if self.failures_path.exists():
            tables.append(pq.read_table(self.failures_path).cast(FAILURE_SCHEMA))
        for journal in self._journals("failures"):
            batches = list(read_journal(journal))
            if batches:
                tables.append(pa.Table.from_batches(batches).cast(FAILURE_SCHEMA))
        if not tables:
            frame = pl.from_arrow(FAILURE_SCHEMA.empty_table())
        else:
            frame = pl.from_arrow(pa.concat_tables(tables))
        assert isinstance(frame, pl.DataFrame)
        return frame.unique(KEY, keep="last", maintain_order=True)

    # -- writing -------------------------------------------------------------------------

    def begin(self, run_id: str, schema: pa.Schema) -> None:
        """Start this run's journals (created on first write)."""
        self.run_id = run_id
        self.schema = schema

    def _journal_error(self, exc: OSError) -> OutputError:
        # A full disk or a folder gone read-only while running: what is already in the
        # journals is durable (a torn last record is ignored), so the next run resumes.
        return OutputError(
            f"could not write the run's journal in {self.work} ({exc.strerror or exc}); "
            "free some space (or make the folder writable) and re-run: the previous output "
            "is intact and the results written so far are kept"
        )

    def write_results(self, table: pa.Table) -> None:
        """Append results durably."""
        try:
            if self._results is None:
                path = self.work / f"results-{self.run_id}.arrow"
                self._results = Journal(path, self.schema)
            self._results.write(table)
        except OSError as exc:
            raise self._journal_error(exc) from exc

    def write_failures(self, failures: list[RowFailure]) -> None:
        """Append failures durably."""
        if not failures:
            return
        try:
            self._write_failures(failures)
        except OSError as exc:
            raise self._journal_error(exc) from exc

    def _write_failures(self, failures: list[RowFailure]) -> None:
        if self._failures is None:
            self._failures = Journal(self.work / f"failures-{self.run_id}.arrow", FAILURE_SCHEMA)
        now = pa.scalar(int(time.time() * 1000), pa.timestamp("ms", tz="UTC"))
        secrets = secret_values()  # the last guard: a message quoting the token, in any form
        table = pa.table(
            {
                KEY: [f.key for f in failures],
                "error": [f.error for f in failures],
                "code": pa.array([f.code for f in failures], pa.int32()),
                "status": pa.array([f.status for f in failures], pa.int32()),
                "message": [mask(f.message, secrets) for f in failures],
                "attempts": pa.array([f.attempts for f in failures], pa.int32()),
                "retryable": [f.retryable for f in failures],
                "run_id": [self.run_id] * len(failures),
                "failed_at": pa.array([now] * len(failures), pa.timestamp("ms", tz="UTC")),
            },
            schema=FAILURE_SCHEMA,
        )
        self._failures.write(table)

    def close_journals(self) -> None:
        for journal in (self._results, self._failures):
            if journal is not None:
                journal.close()
        self._results = self._failures = None

    # -- finishing -----------------------------------------------------------------------

    def _metadata(self, consumed: list[str], previous: dict[str, str]) -> dict[str, str]:
        runs = json.loads(previous.get("run_ids", "[]"))
        if self.run_id and self.run_id not in runs:
            runs.append(self.run_id)
        meta = {
            **self.meta,
            "fingerprint": self.fingerprint.digest,
            "identity": json.dumps(self.fingerprint.parts),
            "schema_version": SCHEMA_VERSION,
            "run_ids": json.dumps(runs),
            "consumed": json.dumps(consumed),
        }
        return {META_PREFIX + k: v for k, v in meta.items()}

    def finalize(self) -> tuple[int, int]:
        """Merge previous output and journals into the final files; returns (rows, failures)."""
        self.close_journals()
        result_journals = self._journals("results")
        failure_journals = self._journals("failures")
        if not result_journals and not failure_journals and self.path.exists():
            # Nothing new (a run with nothing to do, or one stopped by an error before its
            # first result): the files stay as they are, byte for byte, however large.
            return pq.ParquetFile(self.path).metadata.num_rows, self.failures().height
        previous = file_metadata(self.path) if self.path.exists() else {}
        failures = self.failures()
        failed_keys = set(failures.get_column(KEY).to_list()) if failures.height else set()
        succeeded: set[str] = set()
        schema = self.schema.with_metadata(
            self._metadata([p.name for p in result_journals], previous)
        )
        rows = 0
        try:
            with (
                atomic_path(self.path) as tmp,
                pq.ParquetWriter(tmp, schema, compression="zstd") as writer,
            ):
                buffer: list[pa.RecordBatch] = []
                buffered = 0
                for batch in self._all_result_batches(result_journals):
                    batch = pa.Table.from_batches([batch]).cast(self.schema).to_batches()
                    for b in batch:
                        if failed_keys:
                            succeeded.update(
                                k for k in b.column(KEY).to_pylist() if k in failed_keys
                            )
                        buffer.append(b)
                        buffered += b.num_rows
                    if buffered >= ROW_GROUP_ROWS:
                        writer.write_table(pa.Table.from_batches(buffer, schema=self.schema))
                        rows += buffered
                        buffer, buffered = [], 0
                if buffer:
                    writer.write_table(pa.Table.from_batches(buffer, schema=self.schema))
                    rows += buffered
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise OutputError(
                f"existing output {self.path} does not match this job's columns ({exc}); "
                "re-run with --fresh"
            ) from exc
        except OSError as exc:
            raise OutputError(
                f"could not write {self.path} ({exc.strerror or exc}); the previous output "
                "is intact and the results are kept for the next run"
            ) from exc
        for journal in result_journals:
            journal.unlink(missing_ok=True)
        remaining = failures.filter(~pl.col(KEY).is_in(list(succeeded))) if succeeded else failures
        self._write_failures_file(remaining, failure_journals)
        return rows, remaining.height

    def _all_result_batches(self, journals: list[Path]) -> Iterator[pa.RecordBatch]:
        if self.path.exists():
            yield from pq.ParquetFile(self.path).iter_batches(batch_size=ROW_GROUP_ROWS)
        for journal in journals:
            yield from read_journal(journal)

    def _write_failures_file(self, failures: pl.DataFrame, journals: list[Path]) -> None:
        if failures.height == 0 and not self.failures_path.exists() and not journals:
            return
        previous = file_metadata(self.failures_path) if self.failures_path.exists() else {}
        table = failures.to_arrow().cast(FAILURE_SCHEMA)
        table = table.replace_schema_metadata(self._metadata([p.name for p in journals], previous))
        try:
            with atomic_path(self.failures_path) as tmp:
                pq.write_table(table, tmp, compression="zstd")
        except OSError as exc:
            raise OutputError(
                f"could not write {self.failures_path} ({exc.strerror or exc}); the output "
                "is written, and the failures are kept for the next run"
            ) from exc
        for journal in journals:
            journal.unlink(missing_ok=True)
