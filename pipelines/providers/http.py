"""What every HTTP provider shares: its client, one POST that maps transport failures to
typed errors, and the guard that keeps secrets out of every error message it raises."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import httpx

from pipelines.core.errors import ProviderError
from pipelines.core.secrets import mask, secret_values
from pipelines.providers.wire import transport_error

USER_AGENT = "pipelines/0.1"

# Failures before the request left this machine: nothing can have been billed.
NEVER_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
)


def make_client(
    timeout_s: float, max_connections: int, transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncClient:
    """A pooled JSON client that never follows redirects (a redirect would carry the token
    to another host)."""
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(timeout_s),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        follow_redirects=False,
    )


async def post(
    client: httpx.AsyncClient,
    url: str,
    content: bytes,
    headers: Mapping[str, str],
    *,
    timeout_s: float,
    model_id: str | None = None,
    params: Mapping[str, str] | None = None,
) -> httpx.Response:
    """One POST; a timeout or a broken connection is a ``TransportError``, marked
    ``maybe_billed`` unless the request certainly never left."""
    try:
        return await client.post(url, content=content, headers=dict(headers), params=params)
    except httpx.TimeoutException as exc:
        error = transport_error(f"{type(exc).__name__} after {timeout_s:g} s", model=model_id)
        error.maybe_billed = not isinstance(exc, NEVER_SENT)
        raise error from exc
    except httpx.HTTPError as exc:
        # Connection refused/reset, RemoteProtocolError, bad content-encoding, ...
        detail = str(exc) or "no detail"
        error = transport_error(f"{type(exc).__name__} ({detail})", model=model_id)
        error.maybe_billed = not isinstance(exc, NEVER_SENT)
        raise error from exc


@contextmanager
def redacting(secret: str) -> Iterator[None]:
    """Make sure no error message leaving the block carries ``secret`` (or any secret of
    the environment), in any form: httpx quotes header values escaped, URLs percent-encoded,
    and a server may echo what it was sent."""
    try:
        yield
    except ProviderError as exc:
        clean = mask(exc.message, [secret, *secret_values()])
        if clean != exc.message:
            exc.message = clean
            exc.args = (clean,)
        raise
