"""The ``openai`` provider: embed and generate calls to any OpenAI-compatible server.

``POST {base}/embeddings`` and ``POST {base}/chat/completions`` with a bearer key, one HTTP
attempt per call (the runner retries, as for Cloudflare). What is sent and how answers and
refusals are read lives in :mod:`pipelines.providers.openai_wire`; the answers come back in
the shape the families read for the model, so nothing above this layer knows the server
was not Workers AI's own API. The key never appears in any error this raises.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from pipelines.catalog.models import ModelInfo
from pipelines.core.errors import AuthenticationFailed
from pipelines.core.secrets import OPENAI_KEY_FILE_VAR, OPENAI_KEY_VAR, check_token
from pipelines.core.urls import check_base_url
from pipelines.providers.base import OpenAISettings, Provider
from pipelines.providers.http import make_client, post, redacting
from pipelines.providers.openai_wire import answer_of, request_for, result_for
from pipelines.providers.wire import JSON_CONTENT_TYPE, encode_json

MISSING_KEY = (
    f"the OpenAI-compatible server's API key is missing: set {OPENAI_KEY_VAR} (or "
    f"{OPENAI_KEY_FILE_VAR}, a file holding it) in the environment"
)


class OpenAIProvider(Provider):
    """Calls an OpenAI-compatible server at ``settings.base_url`` (e.g. ``.../v1``)."""

    name = "openai"

    def __init__(
        self,
        settings: OpenAISettings,
        *,
        timeout_s: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 100,
    ) -> None:
        # checked here too, for settings not made by from_env (see CloudflareProvider)
        check_token(settings.key, "the provider's API key")
        self._settings = settings
        self._base = check_base_url(settings.base_url, "the provider settings")
        parts = urlsplit(self._base)
        self._server = f"the server at {parts.scheme}://{parts.netloc}"
        self._timeout_s = timeout_s
        self._client = make_client(timeout_s, max_connections, transport)

    def __repr__(self) -> str:
        return f"OpenAIProvider({self._settings!r})"

    @property
    def settings(self) -> OpenAISettings:
        """Where and with which key this provider calls (its ``repr`` hides the key)."""
        return self._settings

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def run(self, model: ModelInfo, inputs: dict[str, Any]) -> Any:
        """One embeddings or chat-completions call; returns the answer in the shape the
        model's family reads."""
        with redacting(self._settings.key):
            if not self._settings.key:
                raise AuthenticationFailed(MISSING_KEY, model=model.id)
            path, body = request_for(model, inputs)
            headers = {
                "Authorization": f"Bearer {self._settings.key}",
                "Content-Type": JSON_CONTENT_TYPE,
            }
            resp = await post(
                self._client,
                self._base + path,
                encode_json(body, model=model.id),
                headers,
                timeout_s=self._timeout_s,
                model_id=model.id,
            )
            data = answer_of(
                resp.status_code, resp.headers, resp.content, model=model.id, server=self._server
            )
            return result_for(model, data)
