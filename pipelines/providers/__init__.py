"""Providers: the things that run a model call (Cloudflare over HTTP, or local models)."""

from __future__ import annotations

from pipelines.providers.base import Provider, ProviderSettings

__all__ = ["Provider", "ProviderSettings"]
