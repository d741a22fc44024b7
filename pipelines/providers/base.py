"""The provider seam: one async method that runs one model call.

A call's ``inputs`` is the model's JSON input as Cloudflare's published schema describes it,
except that audio is given as raw ``bytes`` under ``"audio"``; each provider owns its wire
format (raw body, base64 JSON, ...). The result is the unwrapped ``result`` of the envelope.
Failures are raised as the typed errors of :mod:`pipelines.core.errors`.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from pipelines.catalog.models import ModelInfo
from pipelines.core.errors import JobError
from pipelines.core.secrets import OPENAI_KEY_FILE_VAR, OPENAI_KEY_VAR, read_openai_key, read_token
from pipelines.core.urls import (
    DEFAULT_BASE_URL,
    OPENAI_BASE_URL_VAR,
    resolve_base_url,
    resolve_openai_base_url,
)

__all__ = ["DEFAULT_BASE_URL", "OpenAISettings", "Provider", "ProviderSettings"]


@dataclass(frozen=True)
class ProviderSettings:
    """Where and as whom to call Workers AI. ``repr`` never shows the token."""

    base_url: str = DEFAULT_BASE_URL
    account_id: str = ""
    token: str = ""

    def __repr__(self) -> str:
        token = "set" if self.token else "unset"
        return (
            f"ProviderSettings(base_url={self.base_url!r}, "
            f"account_id={self.account_id!r}, token={token})"
        )

    @classmethod
    def from_env(cls, base_url: str | None = None) -> ProviderSettings:
        """Read CLOUDFLARE_ACCOUNT_ID, the token (CLOUDFLARE_API_TOKEN or the file
        CLOUDFLARE_API_TOKEN_FILE names) and the base URL (``base_url``, else
        CLOUDFLARE_API_BASE_URL, else CLOUDFLARE_BASE_URL), all checked: a bad token or URL
        is a :class:`~pipelines.core.errors.JobError` that never shows the token.
        """
        return cls(
            base_url=resolve_base_url(base_url),
            account_id=os.environ.get("CLOUDFLARE_ACCOUNT_ID", ""),
            token=read_token(),
        )


@dataclass(frozen=True)
class OpenAISettings:
    """Where and with which key to call an OpenAI-compatible server (provider ``openai``).
    ``repr`` never shows the key."""

    base_url: str = ""
    key: str = ""

    def __repr__(self) -> str:
        return f"OpenAISettings(base_url={self.base_url!r}, key={'set' if self.key else 'unset'})"

    @classmethod
    def from_env(cls, base_url: str | None = None) -> OpenAISettings:
        """The base URL (``base_url``: ``--base-url`` or the job's, else OPENAI_BASE_URL) and
        the key (OPENAI_API_KEY, else the file OPENAI_API_KEY_FILE names), both checked when
        set; a missing base URL is a :class:`JobError` (there is no default server)."""
        found = cls(base_url=resolve_openai_base_url(base_url), key=read_openai_key())
        if not found.base_url:
            raise JobError(
                f"provider openai needs the server's base URL: set {OPENAI_BASE_URL_VAR} (e.g. "
                "https://api.openai.com/v1, or https://api.cloudflare.com/client/v4/accounts/"
                "ACCOUNT/ai/v1 for Workers AI), or give base_url in the job or --base-url"
            )
        return found

    def require_key(self) -> OpenAISettings:
        """These settings, or a :class:`JobError` when no key is set."""
        if not self.key:
            raise JobError(
                f"provider openai needs an API key: set {OPENAI_KEY_VAR}, or "
                f"{OPENAI_KEY_FILE_VAR} to a file holding it (never in the job file)"
            )
        return self


class Provider(ABC):
    """Runs model calls. Use as an async context manager, or call :meth:`aclose`."""

    name: str = "provider"
    # Whether it offers Cloudflare's asynchronous Batch API (submit_batch / poll_batch).
    supports_batch: bool = False

    @abstractmethod
    async def run(self, model: ModelInfo, inputs: dict[str, Any]) -> Any:
        """Run one call and return the model's result (the envelope's ``result``)."""

    async def submit_batch(self, model: ModelInfo, requests: list[dict[str, Any]]) -> str:
        """Queue ``requests`` on the Batch API; the request id (where ``supports_batch``)."""
        raise NotImplementedError(f"provider {self.name} has no Batch API")

    async def poll_batch(self, model: ModelInfo, request_id: str) -> dict[str, Any] | None:
        """``None`` while the batch runs, then its finished answer (``responses``, ``usage``)."""
        raise NotImplementedError(f"provider {self.name} has no Batch API")

    async def aclose(self) -> None:
        """Release connections."""
        return None

    async def __aenter__(self) -> Provider:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
