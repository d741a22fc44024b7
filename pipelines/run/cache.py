"""A content-addressed result cache: an identical input is never paid for twice.

Keys are hashes of what determines a model's answer — who computes it (``produced_by``),
the model, the task kind, the params and the item itself (text plus per-row options) — so
the cache is shared by every job and every run of the account's machine, across nights.
Values are the item's result columns as a one-row Arrow IPC stream. SQLite in WAL mode
makes it safe for several processes at once.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar, cast

import pyarrow as pa

from pipelines.catalog.metering import Usage
from pipelines.core.errors import StateError
from pipelines.core.sqlite import open_database
from pipelines.core.state import ensure_state_dir
from pipelines.tasks.base import Call
from pipelines.tasks.task import Task

CACHE_FILE = "cache.sqlite3"
log = logging.getLogger("pipelines")
_M = TypeVar("_M", bound=Callable[..., Any])

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key BLOB PRIMARY KEY,
    scope TEXT NOT NULL,
    value BLOB NOT NULL,
    created REAL NOT NULL,
    used REAL NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS results_used ON results(used);
"""


def scope_of(*, produced_by: str, model: str, task: str, params: dict[str, Any]) -> str:
    """What, besides the item, decides the answer."""
    return json.dumps(
        {"by": produced_by, "model": model, "task": task, "params": params},
        sort_keys=True,
        default=str,
    )


def item_key(scope: str, item: Sequence[Any]) -> bytes:
    """The cache key of one item (its text and per-row options) within ``scope``."""
    payload = json.dumps([scope, list(item)], sort_keys=True, default=str).encode("utf-8")
    return hashlib.blake2b(payload, digest_size=20).digest()


def encode_row(batch: pa.RecordBatch) -> bytes:
    """One result row as Arrow IPC bytes."""
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue()


def decode_rows(blobs: Iterable[bytes]) -> pa.Table:
    """Rows stored by :func:`encode_row`, in order, as one table."""
    batches = [pa.ipc.open_stream(pa.py_buffer(blob)).read_next_batch() for blob in blobs]
    return pa.Table.from_batches(batches)


def _locked(method: _M) -> _M:
    @functools.wraps(method)
    def wrapper(self: ResultCache, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return cast(_M, wrapper)


class ResultCache:
    """Get and put item results by key. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: Path | None = None) -> None:
        """Open (or create) the cache; :class:`StateError` when it cannot be used."""
        self.path = path if path is not None else ensure_state_dir() / CACHE_FILE
        self._conn = open_database(
            self.path,
            schema=_SCHEMA,
            what="result cache",
            forgets=" (its saved answers are then paid for again)",
        )
        # the runner calls in from worker threads; one connection, one user at a time
        self._lock = threading.Lock()

    @_locked
    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        """The cached values of those keys that are present."""
        found: dict[bytes, bytes] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT key, value FROM results WHERE key IN ({marks})", chunk
            ).fetchall()
            found.update((bytes(k), bytes(v)) for k, v in rows)
        if found:
            now = time.time()
            self._conn.executemany(
                "UPDATE results SET used = ?, hits = hits + 1 WHERE key = ?",
                [(now, k) for k in found],
            )
        return found

    @_locked
    def get_many_readonly(self, keys: Sequence[bytes]) -> set[bytes]:
        """Which of ``keys`` are cached (for ``plan``; does not touch usage times)."""
        present: set[bytes] = set()
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(f"SELECT key FROM results WHERE key IN ({marks})", chunk)
            present.update(bytes(k) for (k,) in rows)
        return present

    @_locked
    def put_many(self, scope: str, items: Sequence[tuple[bytes, bytes]]) -> None:
        """Store results (first writer wins: the answers are identical anyway)."""
        if not items:
            return
        now = time.time()
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany(
                "INSERT OR IGNORE INTO results(key, scope, value, created, used) "
                "VALUES (?, ?, ?, ?, ?)",
                [(k, scope, v, now, now) for k, v in items],
            )
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    @_locked
    def stats(self) -> dict[str, Any]:
        """Entries, bytes and hits, overall and per model."""
        total = self._conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(value)), 0), COALESCE(SUM(hits), 0) FROM results"
        ).fetchone()
        per_scope: dict[str, dict[str, int]] = {}
        for scope, n, size, hits in self._conn.execute(
            "SELECT scope, COUNT(*), SUM(LENGTH(value)), SUM(hits) FROM results GROUP BY scope"
        ):
            model = json.loads(scope).get("model", "?")
            entry = per_scope.setdefault(model, {"entries": 0, "bytes": 0, "hits": 0})
            entry["entries"] += int(n)
            entry["bytes"] += int(size)
            entry["hits"] += int(hits)
        return {
            "path": str(self.path),
            "entries": int(total[0]),
            "bytes": int(total[1]),
            "hits": int(total[2]),
            "models": per_scope,
        }

    @_locked
    def prune(self, *, older_than_days: float | None = None, max_bytes: int | None = None) -> int:
        """Drop entries unused for that long, then the least recently used beyond a size."""
        removed = 0
        if older_than_days is not None:
            cutoff = time.time() - older_than_days * 86_400
            removed += self._conn.execute("DELETE FROM results WHERE used < ?", (cutoff,)).rowcount
        if max_bytes is not None:
            size = 0
            doomed: list[bytes] = []
            for key, length in self._conn.execute(
                "SELECT key, LENGTH(value) FROM results ORDER BY used DESC"
            ):
                size += int(length)
                if size > max_bytes:
                    doomed.append(bytes(key))
            for start in range(0, len(doomed), 500):
                chunk = doomed[start : start + 500]
                marks = ",".join("?" * len(chunk))
                removed += self._conn.execute(
                    f"DELETE FROM results WHERE key IN ({marks})", chunk
                ).rowcount
        with closing(self._conn.cursor()) as cur:
            cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed

    @_locked
    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_cache(path: Path | None = None) -> ResultCache | None:
    """The cache for a run or a plan, or ``None`` with a warning when it cannot be used:
    the cache only saves money, so a damaged one must not stop the work."""
    try:
        return ResultCache(path)
    except StateError as exc:
        log.warning("running without the result cache: %s", exc.message)
        return None


class TaskCache:
    """The cache as one task sees it: answer calls from it, and remember new answers."""

    def __init__(self, cache: ResultCache, task: Task, produced_by: str) -> None:
        self.cache = cache
        self.task = task
        self.scope = scope_of(
            produced_by=produced_by,
            model=task.model.id,
            task=task.job.task.kind,
            params=task.params,
        )

    def keys(self, call: Call) -> list[bytes]:
        return [item_key(self.scope, ident) for ident in self.task.identities(call)]

    def lookup(self, calls: list[Call]) -> tuple[list[pa.Table], list[Call]]:
        """Output tables for the cached items, and calls for the rest (no request made)."""
        keyed = [(call, self.keys(call)) for call in calls]
        found = self.cache.get_many([k for _, keys in keyed for k in keys])
        tables: list[pa.Table] = []
        misses: list[Call] = []
        for call, keys in keyed:
            hit = [i for i, k in enumerate(keys) if k in found]
            if not hit:
                misses.append(call)
                continue
            cached = self.task.subset(call, hit)
            per_item = decode_rows(found[keys[i]] for i in hit)
            columns = {
                name: per_item.column(name).combine_chunks() for name in per_item.column_names
            }
            tables.append(self.task.output_table(cached, columns))
            rest = [i for i, k in enumerate(keys) if k not in found]
            if rest:
                misses.append(self.task.subset(call, rest))
        return tables, misses

    def store(self, call: Call, per_item: dict[str, pa.Array]) -> None:
        """Remember the answers of a call that went through."""
        batch = pa.RecordBatch.from_arrays(list(per_item.values()), names=list(per_item))
        keys = self.keys(call)
        self.cache.put_many(
            self.scope, [(keys[i], encode_row(batch.slice(i, 1))) for i in range(call.size)]
        )

    def count_hits(self, calls: list[Call]) -> tuple[int, list[Call], Usage]:
        """For ``plan``: rows the cache answers, the calls still to send, the usage saved."""
        keyed = [(call, self.keys(call)) for call in calls]
        present: set[bytes] = set()
        all_keys = [k for _, keys in keyed for k in keys]
        if all_keys:
            present = set(self.cache.get_many_readonly(all_keys))
        misses: list[Call] = []
        rows = 0
        saved = Usage()
        for call, keys in keyed:
            hit = [i for i, k in enumerate(keys) if k in present]
            if hit:
                rows += self.task.subset(call, hit).rows.height
                saved = saved + self.task.estimate([call.items[i] for i in hit]).expected
            rest = [i for i, k in enumerate(keys) if k not in present]
            if rest:
                misses.append(call if len(rest) == call.size else self.task.subset(call, rest))
        return rows, misses, saved
