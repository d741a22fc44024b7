"""Whether a process on this host is still alive (for stale locks and reservations)."""

from __future__ import annotations

import os
import sys


def pid_alive(pid: int) -> bool:
    """False only when ``pid`` is certainly gone; unknowable cases count as alive."""
    if pid == os.getpid():
        return True
    if sys.platform == "win32":
        # os.kill on Windows terminates the process whatever the signal: callers rely on age
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: it exists but belongs to someone else
        return True
    return True
