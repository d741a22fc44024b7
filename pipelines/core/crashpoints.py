"""A test hook: kill this process at a named point of its work, to prove what survives.

Torture tests set ``PIPELINES_CRASH_AT=<point>`` (or ``<point>:<n>``, the n-th time the
point is reached, 1-based) on a child process; when the child reaches that point it sends
itself ``SIGKILL``, exactly as ``kill -9`` from outside would, but at a moment a timer could
hardly hit (between a Batch API submission and the write that records its id). Unset, a
crash point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

CRASH_AT = "PIPELINES_CRASH_AT"

_reached: Counter[str] = Counter()


def crash_point(name: str) -> None:
    """Die here if ``PIPELINES_CRASH_AT`` names this point (and this is the n-th time)."""
    wanted = os.environ.get(CRASH_AT)
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] < (int(nth) if nth.isdigit() else 1):
        return
    if hasattr(signal, "SIGKILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(137)  # where there is no SIGKILL: as abrupt, without cleanup
