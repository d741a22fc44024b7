"""Durable, exactly-once output: a journal while running, one atomic Parquet file at the end.

While a run works, every arriving result is appended to an Arrow IPC *journal* in a work
folder next to the output (``.<name>.pipelines/``) and fsync'ed, so a crash or ``kill -9``
loses at most the requests in flight. A torn last record is detected and ignored on
recovery. At the end of a run (finished, stopped by the budget or interrupted) the previous
output and the journals are merged into a temporary file that atomically replaces the
output; the journals it consumed are named in its metadata, so a crash between the rename
and their deletion never counts a row twice. Rows are identified by the ``_key`` column,
and carry the ``_hash`` of the input they answer: the latest outcome of a key (a result, or
a failure) replaces every earlier one, so the output holds one row per key.

Every path comes from :func:`pipelines.job.paths.job_paths`. Opening first checks, without
writing, that the files already there are this job's (:mod:`pipelines.output.ownership`);
only then does ``--fresh`` remove what pipelines made (:mod:`pipelines.output.fresh`). What
is done, and the merge, go through an on-disk index of the keys (:mod:`pipelines.output.index`)
and stream the files (:mod:`pipelines.output.merge`), so memory stays flat however large the
output grows.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.columns import KEY, ROW_HASH
from pipelines.core.errors import OutputError
from pipelines.core.files import atomic_path, atomic_write, tmp_pattern
from pipelines.core.secrets import mask, secret_values
from pipelines.job.paths import job_paths
from pipelines.output.fresh import remove_made_files
from pipelines.output.identity import Fingerprint
from pipelines.output.identity import fingerprint as fingerprint
from pipelines.output.images import image_rows
from pipelines.output.index import OutputIndex
from pipelines.output.journal import Journal
from pipelines.output.merge import add_events, conform, write_merged
from pipelines.output.ownership import META_PREFIX, check_ownership, file_metadata
from pipelines.tasks.base import RowFailure

SCHEMA_VERSION = "2"  # 2: rows carry the ``_hash`` of their input

FAILURE_SCHEMA = pa.schema(
    [
        pa.field(KEY, pa.string()),
        pa.field(ROW_HASH, pa.string()),
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


def _by_src(item: tuple[Path, tuple[int, bool]]) -> int:
    return item[1][0]


def _is_journal_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and Path(name).name == name
        and name.startswith(("results-", "failures-"))
        and name.endswith(".arrow")
    )


class OutputStore:
    """The output of one job: final Parquet file, failures file and the work folder."""

    def __init__(
        self,
        path: Path,
        *,
        fingerprint: Fingerprint,
        meta: dict[str, str],
        sync: bool = False,
        images: Path | None = None,
    ) -> None:
        self.path = path
        self.sync = sync  # output.sync: drop rows whose key left the input
        self.paths = job_paths(path, images)  # images: an image job's folder of files
        self.failures_path = self.paths.failures
        self.work = self.paths.work
        self.fingerprint = fingerprint
        self.meta = meta
        self._results: Journal | None = None
        self._failures: Journal | None = None
        self.run_id = ""
        self._index: OutputIndex | None = None
        self._sources: dict[Path, tuple[int, bool]] = {}  # file -> (event source, failures)

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
        # the manifest too: a kill during its write leaves its temporary file beside it
        targets = (self.path, self.failures_path, self.paths.manifest, self.work / "meta.json")
        for target in targets:
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

    def done_keys(
        self,
        *,
        retry_failed: bool,
        repair: bool = False,
        in_flight: Iterable[Sequence[str]] = (),
    ) -> OutputIndex:
        """The index of this output's keys and their latest outcomes (results, failures,
        unmerged journals), on disk beyond a bounded cache, and the keys ``in_flight`` in
        Batch API payloads (chunks of them). The pending rows are looked up in it, and
        :meth:`finalize` merges with it. For an image job it also knows which rows' files
        are missing (pending again with ``repair``)."""
        self._close_index()
        self._index = OutputIndex(retry_failed=retry_failed, repair=repair)
        self._sources = {}
        self._add_new_events(self._index)
        if self.paths.images is not None:
            self._check_images(self._index)
        for chunk in in_flight:
            self._index.add_in_flight(chunk)
        return self._index

    def _check_images(self, index: OutputIndex) -> None:
        """Mark the rows whose image file is gone (the latest row of a key decides)."""
        results = [p for p, (_, failed) in sorted(self._sources.items(), key=_by_src) if not failed]
        try:
            for keys, present in image_rows(results, self.paths):
                index.set_missing(keys, [not ok for ok in present])
        except (OSError, pa.ArrowException) as exc:
            raise OutputError(
                f"cannot read the index {self.path} ({exc}); re-run with --fresh"
            ) from exc

    def _event_files(self) -> list[tuple[Path, bool]]:
        """Every file holding outcomes, oldest first, and whether it holds failures: the
        failures file, the output, then each run's journals (failures before results;
        within a run a key has one outcome). A merge writes the output first: the two files
        share no key, except after a crash between the two writes, when the output is the
        newer one."""
        files = [(p, f) for p, f in ((self.failures_path, True), (self.path, False)) if p.exists()]
        journals = [(p, True) for p in self._journals("failures")]
        journals += [(p, False) for p in self._journals("results")]
        journals.sort(key=lambda item: (item[0].name.split("-", 1)[1], not item[1]))
        return files + journals

    def _add_new_events(self, index: OutputIndex) -> None:
        for path, failures in self._event_files():
            if path in self._sources:
                continue
            self._sources[path] = (len(self._sources), failures)
            try:
                add_events(index, self._sources[path][0], path, failures=failures)
            except (OSError, pa.ArrowException) as exc:
                raise OutputError(
                    f"{path} exists but cannot be read ({exc}); move it away or re-run with --fresh"
                ) from exc

    def _close_index(self) -> None:
        if self._index is not None:
            self._index.close()
        self._index, self._sources = None, {}

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
        if ROW_HASH in self.schema.names and ROW_HASH not in table.column_names:
            table = conform(table, self.schema)  # a caller that knows no hashes
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
                ROW_HASH: pa.array([f.row_hash for f in failures], pa.string()),
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
        if self._index is None:  # nothing was looked up (a library caller): index now
            self.done_keys(retry_failed=False)
        assert self._index is not None
        try:
            return self._merge(self._index)
        finally:
            self._close_index()

    def _merge(self, index: OutputIndex) -> tuple[int, int]:
        self._add_new_events(index)  # this run's journals: the newest events
        result_journals = self._journals("results")
        failure_journals = self._journals("failures")
        journals = result_journals + failure_journals
        if not journals and self.path.exists() and not index.drops_anything(sync=self.sync):
            # Nothing new (a run with nothing to do, or one stopped by an error before its
            # first result): the files stay as they are, byte for byte, however large.
            return pq.ParquetFile(self.path).metadata.num_rows, index.failure_count()
        outputs = [(src, p) for p, (src, failed) in self._sources.items() if not failed]
        failures = [(src, p) for p, (src, failed) in self._sources.items() if failed]
        rows = self._write_file(index, self.path, self.schema, outputs, result_journals)
        for journal in result_journals:
            journal.unlink(missing_ok=True)
        failed = 0
        if failures or self.failures_path.exists():
            failed = self._write_file(
                index, self.failures_path, FAILURE_SCHEMA, failures, failure_journals
            )
        for journal in failure_journals:
            journal.unlink(missing_ok=True)
        return rows, failed

    def _write_file(
        self,
        index: OutputIndex,
        path: Path,
        schema: pa.Schema,
        sources: list[tuple[int, Path]],
        consumed: list[Path],
    ) -> int:
        """Write ``path`` anew from ``sources``, naming the journals it ``consumed``."""
        previous = file_metadata(path) if path.exists() else {}
        meta = self._metadata([p.name for p in consumed], previous)
        failures = path == self.failures_path
        try:
            with atomic_path(path) as tmp:
                return write_merged(
                    index,
                    sources,
                    schema.with_metadata(meta),
                    tmp,
                    failures=failures,
                    sync=self.sync,
                )
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise OutputError(
                f"existing output {path} does not match this job's columns ({exc}); "
                "re-run with --fresh"
            ) from exc
        except OSError as exc:
            kept = "the output is written, and the failures" if failures else "the results"
            raise OutputError(
                f"could not write {path} ({exc.strerror or exc}); the previous file "
                f"is intact and {kept} are kept for the next run"
            ) from exc
