"""The state folder: the neuron ledger, the result cache and the schedules' logs live there.

``$PIPELINES_STATE_DIR``, else the platform's per-user state folder. :func:`state_dir` only
says where; :func:`ensure_state_dir` also creates it and proves it can be written, so a
folder that is a file, is read-only or cannot be created is one clear error naming the
variable and the path, before anything tries to open a database in it.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from pipelines.core.errors import StateError

STATE_DIR_VAR = "PIPELINES_STATE_DIR"


def state_dir() -> Path:
    """``$PIPELINES_STATE_DIR``, else the platform's per-user state folder."""
    env = os.environ.get(STATE_DIR_VAR)
    if not env:
        return Path(platformdirs.user_state_dir("pipelines"))
    try:
        return Path(env).expanduser()
    except RuntimeError:  # "~someone" with no such user: taken literally, checked on use
        return Path(env)


def _where(folder: Path) -> str:
    if os.environ.get(STATE_DIR_VAR):
        return f"{STATE_DIR_VAR}={folder}"
    return f"the state folder {folder} (set {STATE_DIR_VAR} to use another)"


def _unusable(folder: Path) -> str | None:
    """Why ``folder`` cannot hold state, or ``None``; creates it when missing."""
    try:
        if folder.exists() and not folder.is_dir():
            return "is not a folder"
        folder.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as exc:
        return f"cannot be created ({getattr(exc, 'strerror', None) or exc})"
    probe = folder / f".probe-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as exc:
        return f"is not writable ({exc.strerror or exc})"
    return None


def ensure_state_dir() -> Path:
    """The state folder, created when missing; :class:`StateError` when it is unusable."""
    folder = state_dir()
    why = _unusable(folder)
    if why is not None:
        raise StateError(
            f"{_where(folder)} {why}; point {STATE_DIR_VAR} at a folder this user can write"
        )
    return folder
