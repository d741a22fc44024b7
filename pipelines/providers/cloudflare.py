"""The Cloudflare Workers AI provider: one HTTP attempt per call over the REST API.

Retries are not done here: the runner wraps calls in :func:`pipelines.providers.retry.
with_retries` together with its rate limiter, so a retry also waits for a rate-limit slot.
Request bodies and error mapping live in :mod:`pipelines.providers.wire`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

import httpx

from pipelines.catalog.models import ModelInfo
from pipelines.core.errors import AuthenticationFailed, InvalidInput
from pipelines.core.secrets import check_token
from pipelines.core.urls import DEFAULT_BASE_URL, check_base_url
from pipelines.providers.base import Provider, ProviderSettings
from pipelines.providers.http import make_client, post, redacting
from pipelines.providers.refusals import error_from_response
from pipelines.providers.usage_query import (
    STRING_TYPES,
    load_answer,
    refused_as_invalid,
    usage_from_answer,
    usage_query,
)
from pipelines.providers.wire import (
    IMAGE_ACCEPT,
    JSON_CONTENT_TYPE,
    MISSING_CREDENTIALS,
    encode_json,
    encode_run_body,
    json_inputs,
    transport_error,
    unwrap_result,
)

# The Batch API documents a 10 MB payload limit; checking locally saves a doomed upload.
BATCH_MAX_BYTES = 10 * 1000 * 1000


class CloudflareProvider(Provider):
    """Calls ``{base_url}/accounts/{account_id}/ai/run/{model}`` with a bearer token.

    A base URL ending in ``/workers-ai`` is taken as an AI Gateway endpoint
    (``https://gateway.ai.cloudflare.com/v1/{account}/{gateway}/workers-ai``), where the
    model id follows directly.
    """

    name = "cloudflare"
    supports_batch = True

    def __init__(
        self,
        settings: ProviderSettings,
        *,
        timeout_s: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 100,
    ) -> None:
        # Checked here too, for settings not made by from_env: a token that cannot be a
        # header value would fail every row with a message quoting it.
        check_token(settings.token, "the provider's API token")
        self._settings = settings
        self._base = check_base_url(settings.base_url, "the provider settings")
        self._timeout_s = timeout_s
        # The spelling of the usage query's string type that the analytics API took last.
        self._string_type = STRING_TYPES[0]
        self._client = make_client(timeout_s, max_connections, transport)

    def __repr__(self) -> str:
        return f"CloudflareProvider({self._settings!r})"

    @property
    def settings(self) -> ProviderSettings:
        """Where and as whom this provider calls (its ``repr`` hides the token)."""
        return self._settings

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    # ----------------------------------------------------------------------- URLs

    def model_url(self, model: ModelInfo) -> str:
        """The inference URL for ``model``."""
        if self._base.endswith("/workers-ai"):
            return f"{self._base}/{model.id}"
        return f"{self._base}/accounts/{self._settings.account_id}/ai/run/{model.id}"

    def graphql_url(self) -> str:
        """The analytics endpoint (a gateway does not proxy it, so use the API there)."""
        base = DEFAULT_BASE_URL if self._base.endswith("/workers-ai") else self._base
        return f"{base}/graphql"

    # ----------------------------------------------------------------------- calls

    async def run(self, model: ModelInfo, inputs: dict[str, Any]) -> Any:
        """One inference call; returns the envelope's ``result``."""
        with self._redacting():
            self._require_credentials()
            content, content_type = encode_run_body(model, inputs)
            image = model.image is not None
            accept = IMAGE_ACCEPT if image else None
            resp = await self._post(
                self.model_url(model), content, content_type, model.id, accept=accept
            )
            return unwrap_result(
                resp.status_code, resp.headers, resp.content, model=model.id, image=image
            )

    async def submit_batch(self, model: ModelInfo, requests: list[dict[str, Any]]) -> str:
        """Queue ``requests`` on the asynchronous Batch API; returns the request id."""
        with self._redacting():
            self._require_credentials()
            if not model.batch_api:
                raise InvalidInput(f"{model.id} does not support the Batch API", model=model.id)
            if not requests:
                raise InvalidInput("a Batch API request needs at least one item", model=model.id)
            payload = {"requests": [json_inputs(model, r) for r in requests]}
            # up to 10 MB of JSON: encoded off the event loop
            content = await asyncio.to_thread(encode_json, payload, model=model.id)
            if len(content) > BATCH_MAX_BYTES:
                raise InvalidInput(
                    f"the batch for {model.id} is {len(content) / 1e6:.1f} MB; the Batch API "
                    "takes at most 10 MB: split it into smaller batches",
                    model=model.id,
                )
            resp = await self._post(
                self.model_url(model), content, JSON_CONTENT_TYPE, model.id, queue=True
            )
            result = unwrap_result(resp.status_code, resp.headers, resp.content, model=model.id)
            request_id = result.get("request_id") if isinstance(result, dict) else None
            if not isinstance(request_id, str) or not request_id:
                raise transport_error("the Batch API answered without a request_id", model=model.id)
            return request_id

    async def poll_batch(self, model: ModelInfo, request_id: str) -> dict[str, Any] | None:
        """``None`` while the batch is queued or running, else ``{"responses", "usage"}``.

        Responses may come back in any order; match them to requests by their ``id``.
        """
        with self._redacting():
            self._require_credentials()
            content = encode_json({"request_id": request_id})
            resp = await self._post(
                self.model_url(model), content, JSON_CONTENT_TYPE, model.id, queue=True
            )
            # a finished batch's answer can be 100 MB of JSON: parsed off the event loop
            result = await asyncio.to_thread(
                unwrap_result,
                resp.status_code,
                resp.headers,
                resp.content,
                model=model.id,
                allow_bare=True,
            )
            if isinstance(result, dict):
                if isinstance(result.get("responses"), list):
                    return result
                if result.get("status") in ("queued", "running"):
                    return None
            raise transport_error(
                f"the Batch API answered the poll for {request_id} with neither a status "
                "nor responses",
                model=model.id,
            )

    async def fetch_usage(self, date: str) -> dict[str, float]:
        """Neurons per model id that Cloudflare's analytics report for ``date`` (UTC,
        ``YYYY-MM-DD``). The token needs Account Analytics Read for this."""
        dt.date.fromisoformat(date)  # fail fast on a malformed date, before any request
        with self._redacting():
            self._require_credentials()
            first = self._string_type
            other = next(t for t in STRING_TYPES if t != first)
            data = await self._usage_answer(first, date)
            if refused_as_invalid(data):  # the other spelling of the type, once
                retried = await self._usage_answer(other, date)
                if not refused_as_invalid(retried):
                    self._string_type, data = other, retried
            return usage_from_answer(data)

    async def _usage_answer(self, string_type: str, date: str) -> Mapping[str, Any]:
        payload = {
            "query": usage_query(string_type),
            "variables": {"acct": self._settings.account_id, "date": date},
        }
        resp = await self._post(self.graphql_url(), encode_json(payload), JSON_CONTENT_TYPE)
        if resp.status_code != 200:
            raise error_from_response(resp.status_code, resp.headers, resp.content)
        return load_answer(resp.content)

    # ----------------------------------------------------------------------- plumbing

    def _require_credentials(self) -> None:
        if not self._settings.account_id or not self._settings.token:
            raise AuthenticationFailed(MISSING_CREDENTIALS)

    async def _post(
        self,
        url: str,
        content: bytes,
        content_type: str,
        model_id: str | None = None,
        *,
        queue: bool = False,
        accept: str | None = None,
    ) -> httpx.Response:
        headers = {
            "Authorization": f"Bearer {self._settings.token}",
            "Content-Type": content_type,
        }
        if accept is not None:  # an image model may answer the image itself
            headers["Accept"] = accept
        params = {"queueRequest": "true"} if queue else None
        return await post(
            self._client,
            url,
            content,
            headers,
            timeout_s=self._timeout_s,
            model_id=model_id,
            params=params,
        )

    def _redacting(self) -> AbstractContextManager[None]:
        """Make sure no error message leaving the provider can carry the token."""
        return redacting(self._settings.token)
