"""Serving the emulator: uvicorn on a socket we bind ourselves, in a thread or in the foreground.

Binding first means ``port=0`` resolves to a real free port before the server starts, and
the socket is already listening when :func:`running_emulator` returns. uvicorn runs with
access logs off and without touching the process's logging setup.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

from pipelines.emulator.app import EmulatorApp, build_app
from pipelines.emulator.clock import Clock
from pipelines.emulator.config import EmulatorConfig

DEFAULT_HOST = "127.0.0.1"


def _http_impl() -> str:
    return "httptools" if importlib.util.find_spec("httptools") else "h11"


class _Server(uvicorn.Server):
    """uvicorn, plus a callback once accepting and a quicker exit than its 0.1 s tick."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None] | None) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self._on_ready is not None and not self.should_exit:
            self._on_ready()

    async def main_loop(self) -> None:
        while not self.should_exit:
            await asyncio.sleep(0.01)


def bind(host: str = DEFAULT_HOST, port: int = 0) -> socket.socket:
    """A listening TCP socket (port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this: without it a response's body waits for the
    # client's delayed ACK of its headers (Nagle), 40 ms per keep-alive request on Linux.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def make_server(app: EmulatorApp, on_ready: Callable[[], None] | None = None) -> uvicorn.Server:
    """A uvicorn server for ``app`` with the fast, quiet settings."""
    config = uvicorn.Config(
        app,
        loop="asyncio",
        http=_http_impl(),
        lifespan="off",
        access_log=False,
        log_config=None,
        log_level="warning",
        proxy_headers=False,
        server_header=False,
        date_header=False,
    )
    return _Server(config, on_ready)


class RunningEmulator:
    """Handle on an emulator serving in a background thread."""

    def __init__(self, app: EmulatorApp, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"
        self.base_url = f"{self.url}/client/v4"
        self._client: httpx.Client | None = None

    @property
    def config(self) -> EmulatorConfig:
        """The live knobs; changes apply to the next request."""
        return self.app.emulator.config

    def reconfigure(self, config: EmulatorConfig) -> None:
        """Give every knob ``config``'s value (the server reads them on each request)."""
        for field in dataclasses.fields(config):
            setattr(self.config, field.name, getattr(config, field.name))

    @property
    def clock(self) -> Clock:
        """The clock it runs on (a :class:`~pipelines.emulator.clock.FakeClock` in tests)."""
        return self.app.emulator.clock

    def wait_idle(self, timeout_s: float = 30.0) -> None:
        """Return once no API request is being answered (e.g. ones a client timed out on
        and left running); ``TimeoutError`` if that takes longer than ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.app.emulator.in_flight > 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.app.emulator.in_flight} requests still running")
            time.sleep(0.01)

    def _control(self, method: str, path: str) -> Any:
        if self._client is None:  # one keep-alive client: stats() is called in tight loops
            self._client = httpx.Client(base_url=f"{self.url}/__emulator", timeout=10.0)
        response = self._client.request(method, f"/{path}")
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        """The JSON of ``GET /__emulator/stats``."""
        out: dict[str, Any] = self._control("GET", "stats")
        return out

    def day(self) -> str:
        """The emulated UTC day, read in-process (no request)."""
        return self.app.emulator.ledger.day()

    def reset(self) -> None:
        """``POST /__emulator/reset``."""
        self._control("POST", "reset")

    def advance_day(self) -> str:
        """``POST /__emulator/advance-day``; returns the new emulated day."""
        return str(self._control("POST", "advance-day")["day"])

    def close(self) -> None:
        """Close the control client (the server itself stops with the context manager)."""
        if self._client is not None:
            self._client.close()
            self._client = None


@contextmanager
def running_emulator(
    config: EmulatorConfig | None = None,
    *,
    clock: Clock | None = None,
    host: str = DEFAULT_HOST,
    port: int = 0,
    startup_timeout_s: float = 10.0,
) -> Iterator[RunningEmulator]:
    """Serve the emulator on ``host:port`` in a thread; yields once it accepts connections.

    ``clock`` (default: real time) drives its rate windows, days, bursts, latency and
    Batch API delays; pass a :class:`~pipelines.emulator.clock.FakeClock` to move time in
    a test instead of waiting for it.
    """
    app = build_app(config if config is not None else EmulatorConfig(), clock=clock)
    sock = bind(host, port)
    real_port = int(sock.getsockname()[1])
    ready = threading.Event()
    server = make_server(app, on_ready=ready.set)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="workers-ai-emulator", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not ready.wait(0.01):
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("the emulator did not start")
    handle = RunningEmulator(app, host, real_port)
    try:
        yield handle
    finally:
        handle.close()
        server.should_exit = True
        thread.join(timeout=10.0)
        sock.close()


def serve(
    config: EmulatorConfig,
    host: str = DEFAULT_HOST,
    port: int = 0,
    on_ready: Callable[[str, int], None] | None = None,
    *,
    clock: Clock | None = None,
) -> None:
    """Serve in the foreground until interrupted (the CLI); ``on_ready`` gets host and port."""
    sock = bind(host, port)
    real_port = int(sock.getsockname()[1])
    app = build_app(config, clock=clock)
    callback = None if on_ready is None else (lambda: on_ready(host, real_port))
    try:
        make_server(app, callback).run(sockets=[sock])
    finally:
        sock.close()
