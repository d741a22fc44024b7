"""The Vectorize sink: after a run, upsert the output's vectors into the job's index, once.

The Parquet output stays the source of truth; the sink follows it. A small SQLite journal
in the output's work folder (``vectorize.sqlite3``) records, per index (of one account at
one API base: the emulator's never count as Cloudflare's) and namespace, the id of every
vector Vectorize acknowledged and what it was sent from: the row hash (``_hash``: its text
and kept columns) and the output's producer (``produced_by``). A vector is sent when its id
is not in the journal or its hash changed (the text or its metadata changed); the journal
is written, durably, right after each acknowledged batch, so a ``kill -9`` re-sends at most
the batch in flight, and an upsert is idempotent by id, so that re-send changes nothing in
the index.

Batches keep to Vectorize's documented limits: at most 5000 vectors and 100 MB per upsert;
a vector whose id is over 64 bytes or whose metadata is over 10 KiB is a failure without
being sent. A batch Vectorize refuses as bad input (scope ROW) is split in halves until
the bad vector is alone: it becomes a failure (kept in the journal, shown by the run), the
others go in. Transient errors were already retried by the client; any other error ends
the sink with the journal as far as it got. With ``output.sync``, ids the journal holds
that are no longer in the output are deleted from the index.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.columns import KEY, ROW_HASH
from pipelines.core.errors import OutputError, Scope
from pipelines.core.sqlite import open_database
from pipelines.job.paths import job_paths
from pipelines.job.spec import Job
from pipelines.providers.vectorize import (
    MAX_BODY_BYTES,
    MAX_ID_BYTES,
    MAX_METADATA_BYTES,
    MAX_UPSERT_VECTORS,
    VectorizeClient,
)

__all__ = ["SinkReport", "VectorJournal", "sync_vectorize"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS sent (  -- idx: "<API base>/accounts/<account>#<index>"
    idx TEXT NOT NULL, ns TEXT NOT NULL, id TEXT NOT NULL, hash TEXT NOT NULL,
    PRIMARY KEY (idx, ns, id)
);
CREATE TABLE IF NOT EXISTS failed (
    idx TEXT NOT NULL, ns TEXT NOT NULL, id TEXT NOT NULL, hash TEXT NOT NULL,
    error TEXT NOT NULL, message TEXT NOT NULL, PRIMARY KEY (idx, ns, id)
);
"""
READ_ROWS = 4096


@dataclass
class SinkReport:
    """What one pass of the sink did."""

    index: str
    upserted: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    requests: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (id, message), a few

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "upserted": self.upserted,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "failed": self.failed,
            "requests": self.requests,
        }

    def line(self) -> str:
        return (
            f"vectorize {self.index}: upserted {self.upserted:,}, unchanged {self.unchanged:,}"
            f", deleted {self.deleted:,}, failed {self.failed:,}"
        )


class VectorJournal:
    """Which vectors an index holds, as acknowledged by Vectorize (see the module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_database(
            path, schema=SCHEMA, what="Vectorize journal", forgets="which vectors were sent"
        )
        self._db.execute("PRAGMA synchronous = FULL")  # an acknowledged batch survives a crash

    def sent(self, index: str, ns: str) -> dict[str, str]:
        rows = self._db.execute("SELECT id, hash FROM sent WHERE idx = ? AND ns = ?", (index, ns))
        return dict(rows.fetchall())

    def record(self, index: str, ns: str, items: list[tuple[str, str]]) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT OR REPLACE INTO sent VALUES (?, ?, ?, ?)",
                [(index, ns, i, h) for i, h in items],
            )
            self._db.executemany(
                "DELETE FROM failed WHERE idx = ? AND ns = ? AND id = ?",
                [(index, ns, i) for i, _ in items],
            )

    def fail(self, index: str, ns: str, vid: str, row_hash: str, error: str, msg: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO failed VALUES (?, ?, ?, ?, ?, ?)",
            (index, ns, vid, row_hash, error, msg),
        )

    def forget(self, index: str, ns: str, ids: list[str]) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "DELETE FROM sent WHERE idx = ? AND ns = ? AND id = ?",
                [(index, ns, i) for i in ids],
            )

    def close(self) -> None:
        self._db.close()


def journal_path(job: Job) -> Path:
    return job_paths(job.output_path).work / "vectorize.sqlite3"


@dataclass
class _Vector:
    id: str
    hash: str
    line: bytes


def _metadata_value(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)  # dates, decimals: metadata is JSON


def _vectors(job: Job) -> Iterator[_Vector | tuple[str, str, str]]:
    """Each output row as an NDJSON line, or ``(id, hash, why)`` when it cannot be sent."""
    spec = job.output.vectorize
    assert spec is not None
    id_col = spec.id or KEY
    columns = list(dict.fromkeys([KEY, ROW_HASH, "embedding", id_col, *spec.metadata]))
    try:
        parquet = pq.ParquetFile(job.output_path)
        # who made the vectors: a row is the same vector only from the same producer (an
        # output rebuilt by another model host after --fresh is sent again)
        meta = parquet.schema_arrow.metadata or {}
        producer = meta.get(b"pipelines.produced_by", b"").decode("utf-8", "replace")
        batches = parquet.iter_batches(batch_size=READ_ROWS, columns=columns)
        for batch in batches:
            yield from _batch_vectors(batch, id_col, spec.metadata, spec.namespace, producer)
    except (OSError, pa.ArrowException) as exc:
        raise OutputError(f"cannot read {job.output_path} for Vectorize ({exc})") from exc


def _batch_vectors(
    batch: pa.RecordBatch,
    id_col: str,
    meta_cols: list[str],
    namespace: str | None,
    producer: str,
) -> Iterator[_Vector | tuple[str, str, str]]:
    emb = batch.column("embedding")
    width = emb.type.list_size
    values = np.asarray(emb.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    values = values.reshape(len(batch), width)
    ids = batch.column(id_col).to_pylist()
    hashes = batch.column(ROW_HASH).to_pylist()
    metas = {c: batch.column(c).to_pylist() for c in meta_cols}
    for i, (raw_id, row_hash) in enumerate(zip(ids, hashes, strict=True)):
        vid, h = ("" if raw_id is None else str(raw_id)), f"{row_hash}@{producer}"
        if not vid or len(vid.encode()) > MAX_ID_BYTES:
            yield vid, h, f"id {vid[:80]!r} is empty or over {MAX_ID_BYTES} bytes"
            continue
        obj: dict[str, Any] = {"id": vid, "values": values[i]}
        if meta_cols:
            metadata = {c: _metadata_value(metas[c][i]) for c in meta_cols}
            if len(orjson.dumps(metadata)) > MAX_METADATA_BYTES:
                yield vid, h, f"metadata of {vid} is over {MAX_METADATA_BYTES // 1024} KiB"
                continue
            obj["metadata"] = metadata
        if namespace is not None:
            obj["namespace"] = namespace
        yield _Vector(vid, h, orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")


class _Sender:
    """Upserts batches, bisecting one Vectorize refuses, and journals what went in."""

    def __init__(self, client: VectorizeClient, journal: VectorJournal, job: Job) -> None:
        spec = job.output.vectorize
        assert spec is not None
        self.client, self.journal = client, journal
        self.index, self.ns = spec.index, spec.namespace or ""
        # the journal's index: this account's (or emulator's) index of that name
        self.key = f"{client.target}#{spec.index}"
        self.report = SinkReport(spec.index)

    def failed(self, vid: str, row_hash: str, error: str, message: str) -> None:
        self.journal.fail(self.key, self.ns, vid, row_hash, error, message)
        self.report.failed += 1
        if len(self.report.failures) < 5:
            self.report.failures.append((vid, message))

    async def send(self, batch: list[_Vector]) -> None:
        from pipelines.core.errors import ProviderError

        self.report.requests += 1
        try:
            await self.client.upsert(self.index, b"".join(v.line for v in batch))
        except ProviderError as exc:
            if exc.scope is not Scope.ROW:
                raise
            if len(batch) == 1:
                self.failed(batch[0].id, batch[0].hash, type(exc).__name__, exc.message)
                return
            half = len(batch) // 2
            await self.send(batch[:half])
            await self.send(batch[half:])
            return
        self.journal.record(self.key, self.ns, [(v.id, v.hash) for v in batch])
        self.report.upserted += len(batch)


async def sync_vectorize(job: Job, client: VectorizeClient) -> SinkReport:
    """Bring the job's index up to date with its output (see the module docstring)."""
    spec = job.output.vectorize
    assert spec is not None
    journal = VectorJournal(journal_path(job))
    try:
        sender = _Sender(client, journal, job)
        sent = journal.sent(sender.key, sender.ns)
        seen: set[str] = set()
        batch: list[_Vector] = []
        size = 0
        if job.output_path.exists():
            for item in _vectors(job):
                if isinstance(item, tuple):
                    seen.add(item[0])
                    sender.failed(item[0], item[1], "InvalidInput", item[2])
                    continue
                seen.add(item.id)
                if sent.get(item.id) == item.hash:
                    sender.report.unchanged += 1
                    continue
                if batch and (
                    len(batch) >= MAX_UPSERT_VECTORS or size + len(item.line) > MAX_BODY_BYTES
                ):
                    await sender.send(batch)
                    batch, size = [], 0
                batch.append(item)
                size += len(item.line)
        if batch:
            await sender.send(batch)
        if job.output.sync:
            stale = sorted(set(sent) - seen)
            if stale:
                await client.delete_by_ids(spec.index, stale)
                journal.forget(sender.key, sender.ns, stale)
                sender.report.deleted = len(stale)
        return sender.report
    finally:
        journal.close()


async def check_index(job: Job, client: VectorizeClient, dimensions: int | None) -> str:
    """The index's metric, after checking it exists and fits the model (a JobError if not:
    before any neuron is spent)."""
    from pipelines.core.errors import JobError

    spec = job.output.vectorize
    assert spec is not None
    config = (await client.info(spec.index)).get("config") or {}
    have = config.get("dimensions")
    if dimensions is not None and have != dimensions:
        raise JobError(
            f"Vectorize index {spec.index} has {have} dimensions but {job.task.model} "
            f"writes {dimensions}: use an index made for the model "
            f"(`pipelines vectorize create NAME --model {job.task.model}`)"
        )
    return str(config.get("metric") or "")


def failed_count(job: Job) -> int:
    """Vectors of the job that Vectorize (or its limits) refused, as the journal holds."""
    path = journal_path(job)
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path) as db:
            return int(db.execute("SELECT COUNT(*) FROM failed").fetchone()[0])
    except sqlite3.Error:
        return 0
