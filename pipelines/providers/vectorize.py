"""A client for Cloudflare Vectorize v2 over the REST API (``/accounts/{a}/vectorize/v2``).

Create and read an index, upsert vectors as NDJSON, query by vector, get and delete by id.
Errors become the typed errors of :mod:`pipelines.core.errors`, decided by HTTP status
alone (Vectorize's codes are not published per error): 429 and 5xx are transient and
retried with the same backoff as inference, 400/413/422 say the request (so a vector in
it) is bad (scope ROW), 401/403 are the token's, and a missing index is a
:class:`VectorizeIndexMissing` (a job error: exit 2). The token never appears in an error.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import httpx

from pipelines.core.errors import (
    AuthenticationFailed,
    InvalidInput,
    JobError,
    ProviderError,
    RateLimited,
    ServerError,
)
from pipelines.core.secrets import check_token
from pipelines.core.urls import check_base_url
from pipelines.providers.base import ProviderSettings
from pipelines.providers.http import make_client, post, redacting
from pipelines.providers.retry import RetryPolicy, with_retries
from pipelines.providers.wire import transport_error

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_METADATA_BYTES",
    "MAX_UPSERT_VECTORS",
    "VectorizeClient",
    "VectorizeIndexMissing",
]

# Vectorize's documented limits (developers.cloudflare.com/vectorize/platform/limits/)
MAX_UPSERT_VECTORS = 5000  # per upsert over the HTTP API
MAX_BODY_BYTES = 100 * 1024 * 1024  # "maximum vectors upload size"
MAX_METADATA_BYTES = 10 * 1024  # per vector
MAX_ID_BYTES = 64
MAX_DELETE_IDS = 1000  # not documented: kept to a list-vectors page


class VectorizeIndexMissing(JobError):
    """The job names an index the account does not have."""


def _message(body: bytes) -> str:
    try:
        data = json.loads(body)
        errors = data.get("errors") if isinstance(data, dict) else None
        if errors and isinstance(errors[0], dict):
            return str(errors[0].get("message") or "")
    except ValueError:
        pass
    return body[:200].decode("utf-8", "replace")


def _error(response: httpx.Response, what: str, index: str) -> ProviderError | JobError:
    status = response.status_code
    detail = f"Vectorize {what} on index {index}: HTTP {status}: {_message(response.content)}"
    if status == 404:
        return VectorizeIndexMissing(
            f"no Vectorize index {index} on this account; create it with "
            f"`pipelines vectorize create {index} --model MODEL`"
        )
    if status == 429:
        retry = response.headers.get("retry-after", "")
        return RateLimited(detail, status=status, retry_after=float(retry) if retry else None)
    if status >= 500:
        return ServerError(detail, status=status)
    if status in (401, 403):
        return AuthenticationFailed(
            detail + "; the token needs the Vectorize Read and Write permissions", status=status
        )
    return InvalidInput(detail, status=status)


class VectorizeClient:
    """One account's Vectorize, at the settings' base URL (the emulator's too)."""

    def __init__(
        self,
        settings: ProviderSettings,
        *,
        timeout_s: float = 60.0,
        policy: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        check_token(settings.token, "the Vectorize API token")
        if not settings.account_id:
            raise JobError("Vectorize needs CLOUDFLARE_ACCOUNT_ID (and CLOUDFLARE_API_TOKEN)")
        base = check_base_url(settings.base_url, "the provider settings")
        self._token = settings.token
        self._base = f"{base}/accounts/{settings.account_id}/vectorize/v2/indexes"
        # whose indexes these are: the sink's journal keeps each target's vectors apart
        self.target = f"{base}/accounts/{settings.account_id}"
        self._timeout_s = timeout_s
        self._policy = policy or RetryPolicy()
        self._client = make_client(timeout_s, 8, transport)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> VectorizeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _headers(self, content_type: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}", "Content-Type": content_type}

    async def _once(self, method: str, url: str, body: bytes, ctype: str, what: str) -> Any:
        index = url.removeprefix(self._base).strip("/").split("/")[0] or "?"
        if method == "GET":
            try:
                response = await self._client.get(url, headers=self._headers(ctype))
            except httpx.HTTPError as exc:
                raise transport_error(f"{type(exc).__name__} ({exc})") from exc
        else:
            response = await post(
                self._client, url, body, self._headers(ctype), timeout_s=self._timeout_s
            )
        if response.status_code != 200:
            raise _error(response, what, index)
        try:
            data = json.loads(response.content)
        except ValueError as exc:
            raise transport_error(f"Vectorize {what}: HTTP 200 with a non-JSON body") from exc
        if not isinstance(data, dict) or data.get("success") is False:
            raise transport_error(f"Vectorize {what}: HTTP 200 without a result envelope")
        return data.get("result")

    async def _call(
        self, method: str, path: str, body: bytes = b"", *, ctype: str = "application/json"
    ) -> Any:
        what = path.rsplit("/", 1)[-1] or "create"
        with redacting(self._token):
            return await with_retries(
                lambda: self._once(method, self._base + path, body, ctype, what), self._policy
            )

    async def info(self, name: str) -> dict[str, Any]:
        """The index's ``name``, ``config.dimensions`` and ``config.metric``."""
        result = await self._call("GET", f"/{name}")
        if not isinstance(result, dict) or not isinstance(result.get("config"), dict):
            raise JobError(f"Vectorize index {name}: an answer without its config")
        return result

    async def create(
        self, name: str, dimensions: int, metric: str, description: str = ""
    ) -> dict[str, Any]:
        config = {"dimensions": dimensions, "metric": metric}
        body = {"name": name, "description": description, "config": config}
        result = await self._call("POST", "", json.dumps(body).encode())
        return result if isinstance(result, dict) else {}

    async def upsert(self, name: str, ndjson: bytes) -> None:
        """Upsert the vectors of an NDJSON body (one object a line); idempotent by id."""
        await self._call("POST", f"/{name}/upsert", ndjson, ctype="application/x-ndjson")

    async def query(
        self,
        name: str,
        vector: Sequence[float],
        *,
        top_k: int = 5,
        namespace: str | None = None,
        metadata: bool = True,
    ) -> list[dict[str, Any]]:
        body: dict[str, Any] = {
            "vector": list(vector),
            "topK": top_k,
            "returnValues": False,
            "returnMetadata": "all" if metadata else "none",
        }
        if namespace is not None:
            body["namespace"] = namespace
        result = await self._call("POST", f"/{name}/query", json.dumps(body).encode())
        matches = result.get("matches") if isinstance(result, dict) else None
        return [m for m in matches or [] if isinstance(m, dict)]

    async def get_by_ids(self, name: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        body = json.dumps({"ids": list(ids)}).encode()
        result = await self._call("POST", f"/{name}/get_by_ids", body)
        return [v for v in result or [] if isinstance(v, dict)]

    async def delete_by_ids(self, name: str, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), MAX_DELETE_IDS):
            chunk = list(ids[start : start + MAX_DELETE_IDS])
            await self._call("POST", f"/{name}/delete_by_ids", json.dumps({"ids": chunk}).encode())
