"""Waiting on something that Ctrl-C or SIGTERM must be able to end at once (the ``--wait``
sleep until 00:00 UTC), without a traceback or click's ``Aborted!``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable

log = logging.getLogger("pipelines")


async def until_signal(awaitable: Awaitable[object]) -> bool:
    """Await ``awaitable``; False (and it is cancelled) if SIGINT or SIGTERM comes first."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(awaitable)
    interrupted = asyncio.Event()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, interrupted.set)
            installed.append(sig)
    waiter = asyncio.ensure_future(interrupted.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        waiter.cancel()
    if task.done():
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    log.warning("stopped while waiting for the daily reset; re-run to resume")
    return False
