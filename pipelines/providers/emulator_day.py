"""Asking a server whether it is the emulator, and following the emulator's day.

The emulator answers ``GET /__emulator/stats`` (no token is sent); Cloudflare does not. When
it answers, its emulated UTC day is what a run's ledger counts against: :class:`EmulatorDay`
keeps it fresh from a background task, so reading it never blocks, nor waits on a network.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from urllib.parse import urlsplit

import httpx

PROBE_TIMEOUT_S = 3.0
REFRESH_S = 0.5


def _origin(base_url: str) -> str:
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}"


async def _read_day(client: httpx.AsyncClient, url: str) -> str | None:
    try:
        response = await client.get(url)
        if response.status_code != 200:
            return None
        body = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    if isinstance(body, dict) and isinstance(body.get("day"), str) and "daily_neurons" in body:
        return str(body["day"])
    return None


class EmulatorDay:
    """The emulated day of the emulator at ``origin``, refreshed in the background."""

    def __init__(self, origin: str, client: httpx.AsyncClient, day: str) -> None:
        self.origin = origin
        self._client = client
        self._url = f"{origin}/__emulator/stats"
        self._day = day
        self._task: asyncio.Task[None] | None = None

    def today(self) -> str:
        """The emulated day as last seen (at most ``REFRESH_S`` old); never blocks."""
        return self._day

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            day = await _read_day(self._client, self._url)
            if day is not None:  # a missed refresh keeps the last day seen
                self._day = day

    async def __aenter__(self) -> EmulatorDay:
        self._task = asyncio.create_task(self._refresh())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._client.aclose()


async def probe_emulator(base_url: str) -> EmulatorDay | None:
    """An :class:`EmulatorDay` when the server at ``base_url`` is the emulator, else None."""
    origin = _origin(base_url)
    client = httpx.AsyncClient(timeout=PROBE_TIMEOUT_S, follow_redirects=False)
    day = await _read_day(client, f"{origin}/__emulator/stats")
    if day is None:
        await client.aclose()
        return None
    return EmulatorDay(origin, client, day)
