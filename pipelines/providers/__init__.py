"""Providers: the things that run a model call (Cloudflare over HTTP, or local models)."""

from __future__ import annotations

from pipelines.providers.base import Provider, ProviderSettings
from pipelines.providers.cloudflare import CloudflareProvider
from pipelines.providers.retry import RetryPolicy, with_retries

__all__ = ["CloudflareProvider", "Provider", "ProviderSettings", "RetryPolicy", "with_retries"]
