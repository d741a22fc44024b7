"""Vectorize v2 in the emulator: indexes, NDJSON upserts, exact queries, get and delete by id.

Routes under ``/client/v4/accounts/{account}/vectorize/v2/indexes``: create (``POST``),
info (``GET /{name}``), delete index (``DELETE /{name}``), ``POST /{name}/upsert`` (an
NDJSON body, one vector a line), ``/query``, ``/get_by_ids`` and ``/delete_by_ids``. Each
account has its own indexes. Every answer is in Cloudflare's v4 envelope.

Queries are exact: a brute-force scan of every vector in the index (or namespace), scored
as Vectorize scores them: cosine similarity and dot product (higher first), euclidean
distance (lower first). Mutations apply at once, where Cloudflare applies them a few
seconds later; a client that waits for them loses nothing here.

The latency, ``error_rate`` and ``capacity_rate`` knobs answer Vectorize requests with 5xx and 429
as they do inference requests. The documented limits are enforced (5000 vectors per HTTP
upsert, 100 MB a body, ids and namespaces up to 64 bytes, metadata up to 10 KiB a vector,
1536 dimensions, topK up to 100, or 20 with values or all metadata). The error codes are
the emulator's own: a client must decide by HTTP status, which is what Cloudflare
documents.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipelines.emulator import envelope as env

MAX_UPSERT_VECTORS = 5000
MAX_BODY_BYTES = 100 * 1024 * 1024
MAX_ID_BYTES = 64
MAX_METADATA_BYTES = 10 * 1024
MAX_DIMENSIONS = 1536
MAX_TOP_K = 100
MAX_TOP_K_WITH_DATA = 20
METRICS = ("cosine", "euclidean", "dot-product")

# the emulator's codes (Cloudflare's are not published per error); clients use the status
CODE_INVALID = 40001
CODE_NOT_FOUND = 40004
CODE_EXISTS = 40009


@dataclass
class Index:
    """One index: its config and vectors (id → values, metadata, namespace)."""

    name: str
    dimensions: int
    metric: str
    description: str = ""
    created_on: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    values: dict[str, np.ndarray] = field(default_factory=dict)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    namespaces: dict[str, str | None] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "config": {"dimensions": self.dimensions, "metric": self.metric},
            "created_on": self.created_on,
            "modified_on": self.created_on,
            "vectorCount": len(self.values),
        }


class Store:
    """Every account's indexes."""

    def __init__(self) -> None:
        self.indexes: dict[tuple[str, str], Index] = {}

    def get(self, account: str, name: str) -> Index:
        index = self.indexes.get((account, name))
        if index is None:
            raise env.ApiError(404, CODE_NOT_FOUND, f"vectorize.index.not_found: {name}")
        return index


def _bad(message: str) -> env.ApiError:
    return env.ApiError(400, CODE_INVALID, message)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        obj = env.loads(body)
    except ValueError as exc:
        raise _bad(f"the body is not JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise _bad("the body must be a JSON object")
    return obj


def _create(store: Store, account: str, body: dict[str, Any]) -> dict[str, Any]:
    name, config = body.get("name"), body.get("config")
    if not isinstance(name, str) or not 0 < len(name.encode()) <= MAX_ID_BYTES:
        raise _bad("name must be a string of 1 to 64 bytes")
    if not isinstance(config, dict):
        raise _bad("config {dimensions, metric} is required")
    dims, metric = config.get("dimensions"), config.get("metric")
    if not isinstance(dims, int) or isinstance(dims, bool) or not 0 < dims <= MAX_DIMENSIONS:
        raise _bad(f"config.dimensions must be an integer from 1 to {MAX_DIMENSIONS}")
    if metric not in METRICS:
        raise _bad(f"config.metric must be one of {', '.join(METRICS)}")
    if (account, name) in store.indexes:
        raise env.ApiError(409, CODE_EXISTS, f"vectorize.index.duplicate_name: {name}")
    index = Index(name, dims, str(metric), str(body.get("description") or ""))
    store.indexes[(account, name)] = index
    return index.info()


def _vector(index: Index, line: Any, number: int) -> tuple[str, np.ndarray, Any, Any]:
    if not isinstance(line, dict):
        raise _bad(f"line {number}: a vector must be a JSON object")
    vid, values = line.get("id"), line.get("values")
    if not isinstance(vid, str) or not 0 < len(vid.encode()) <= MAX_ID_BYTES:
        raise _bad(f"line {number}: id must be a string of 1 to {MAX_ID_BYTES} bytes")
    if not isinstance(values, list) or len(values) != index.dimensions:
        got = len(values) if isinstance(values, list) else "no"
        raise _bad(
            f"line {number}: vector {vid} has {got} dimensions, the index {index.dimensions}"
        )
    try:
        array = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise _bad(f"line {number}: values of {vid} are not numbers") from exc
    if not np.isfinite(array).all():
        raise _bad(f"line {number}: values of {vid} are not finite")
    metadata, namespace = line.get("metadata"), line.get("namespace")
    if metadata is not None and (
        not isinstance(metadata, dict) or len(env.dumps(metadata)) > MAX_METADATA_BYTES
    ):
        raise _bad(f"line {number}: metadata of {vid} must be an object of at most 10 KiB")
    if namespace is not None and (
        not isinstance(namespace, str) or len(namespace.encode()) > MAX_ID_BYTES
    ):
        raise _bad(f"line {number}: namespace of {vid} must be a string of at most 64 bytes")
    return vid, array, metadata, namespace


def _upsert(index: Index, body: bytes) -> dict[str, Any]:
    lines = [line for line in body.splitlines() if line.strip()]
    if not lines:
        raise _bad("no vectors in the body")
    if len(lines) > MAX_UPSERT_VECTORS:
        raise _bad(f"{len(lines)} vectors: at most {MAX_UPSERT_VECTORS} per upsert")
    parsed = []
    for number, raw in enumerate(lines, 1):
        try:
            obj = env.loads(raw)
        except ValueError as exc:
            raise _bad(f"line {number} is not JSON ({exc})") from exc
        parsed.append(_vector(index, obj, number))
    # all or nothing: one bad line refuses the whole body, as unparsable-behavior=error does
    for vid, array, metadata, namespace in parsed:
        index.values[vid] = array
        index.metadata[vid] = metadata or {}
        index.namespaces[vid] = namespace
    return {"mutationId": str(uuid.uuid4())}


def scores(index: Index, query: np.ndarray, ids: list[str]) -> np.ndarray:
    """Vectorize's score of each of ``ids`` for ``query`` (see the module docstring)."""
    matrix = np.stack([index.values[i] for i in ids]).astype(np.float64)
    q = query.astype(np.float64)
    if index.metric == "euclidean":
        return np.asarray(np.linalg.norm(matrix - q, axis=1))
    dots = matrix @ q
    if index.metric == "dot-product":
        return np.asarray(dots)
    norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(q)
    return np.asarray(np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0))


def _query(index: Index, body: dict[str, Any]) -> dict[str, Any]:
    vector = body.get("vector")
    if not isinstance(vector, list) or len(vector) != index.dimensions:
        raise _bad(f"vector must be a list of {index.dimensions} numbers")
    top_k = body.get("topK", 5)
    values = body.get("returnValues") is True
    meta = body.get("returnMetadata", "none")
    meta = {True: "all", False: "none"}.get(meta, meta) if isinstance(meta, bool) else meta
    if meta not in ("none", "indexed", "all"):
        raise _bad("returnMetadata must be none, indexed or all")
    limit = MAX_TOP_K_WITH_DATA if values or meta == "all" else MAX_TOP_K
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 0 < top_k <= limit:
        raise _bad(f"topK must be an integer from 1 to {limit} here")
    namespace = body.get("namespace")
    ids = [i for i in index.values if namespace is None or index.namespaces[i] == namespace]
    if not ids:
        return {"count": 0, "matches": []}
    got = scores(index, np.asarray(vector, dtype=np.float32), ids)
    order = np.argsort(got if index.metric == "euclidean" else -got, kind="stable")[:top_k]
    matches = []
    for i in order:
        vid = ids[int(i)]
        match: dict[str, Any] = {"id": vid, "score": float(got[int(i)])}
        if values:
            match["values"] = index.values[vid].tolist()
        if meta == "all":  # no metadata indexes here, so "indexed" returns none
            match["metadata"] = index.metadata[vid]
        if index.namespaces[vid] is not None:
            match["namespace"] = index.namespaces[vid]
        matches.append(match)
    return {"count": len(matches), "matches": matches}


def _ids(body: dict[str, Any]) -> list[str]:
    ids = body.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise _bad("ids must be a list of strings")
    return list(ids)


def _get(index: Index, ids: list[str]) -> list[dict[str, Any]]:
    out = []
    for vid in ids:
        if vid in index.values:
            item = {"id": vid, "values": index.values[vid].tolist()}
            item["metadata"] = index.metadata[vid]
            if index.namespaces[vid] is not None:
                item["namespace"] = index.namespaces[vid]
            out.append(item)
    return out


def _delete(index: Index, ids: list[str]) -> dict[str, Any]:
    for vid in ids:
        index.values.pop(vid, None)
        index.metadata.pop(vid, None)
        index.namespaces.pop(vid, None)
    return {"mutationId": str(uuid.uuid4())}


async def _handle(request: Request) -> Any:
    emu = request.app.emulator
    emu.authorize(request.headers.get("authorization"))
    # the same random 5xx and 429 answers as inference (error_rate, capacity_rate knobs)
    plan = emu.faults.plan(emu.config, emu.elapsed())
    if plan.delay_s > 0:  # latency_ms and spikes, as for inference
        await emu.clock.sleep(plan.delay_s)
    if plan.kind == "error":
        raise env.server_error(plan.status)
    if plan.kind == "capacity":
        raise env.ApiError(429, 429, "Too many requests", headers={"Retry-After": "0"})
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise env.ApiError(413, CODE_INVALID, "the body is over the 100 MB upload limit")
    store: Store = emu.vectorize
    account = request.path_params["account"]
    name = request.path_params.get("name")
    op = request.path_params.get("op")
    if name is None:
        return _create(store, account, _json_object(body))
    if op is None and request.method == "DELETE":
        store.get(account, name)
        del store.indexes[(account, name)]
        return {}
    index = store.get(account, name)
    match op:
        case None:
            return index.info()
        case "upsert" | "insert":
            return _upsert(index, body)
        case "query":
            return _query(index, _json_object(body))
        case "get_by_ids":
            return _get(index, _ids(_json_object(body)))
        case "delete_by_ids":
            return _delete(index, _ids(_json_object(body)))
    raise env.ApiError(404, CODE_NOT_FOUND, f"no route for {op}")


async def serve(request: Request) -> Response:
    """Every Vectorize route: the answer in the v4 envelope, errors in its error shape."""
    try:
        result = await _handle(request)
    except env.ApiError as exc:
        return env.error_response(exc)
    return env.json_response(env.success(result))


def routes(prefix: str) -> list[Route]:
    """The routes, under ``prefix`` (``/client/v4``)."""
    base = prefix + "/accounts/{account}/vectorize/v2/indexes"
    return [
        Route(base, serve, methods=["POST"]),
        Route(base + "/", serve, methods=["POST"]),
        Route(base + "/{name}", serve, methods=["GET", "DELETE"]),
        Route(base + "/{name}/{op}", serve, methods=["POST"]),
    ]
