"""Shared fixtures: every test gets its own state folder and a clean Cloudflare environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in (
        "CLOUDFLARE_ACCOUNT_ID",
        "CLOUDFLARE_API_TOKEN",
        "CLOUDFLARE_API_TOKEN_FILE",
        "CLOUDFLARE_API_BASE_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIPELINES_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PIPELINES_CONFIG", str(tmp_path / "config.yaml"))
    yield
