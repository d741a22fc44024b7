"""The public API: every exported name resolves, and the list is deliberate."""

from __future__ import annotations

import pipelines


def test_every_exported_name_resolves() -> None:
    for name in pipelines.__all__:
        assert getattr(pipelines, name) is not None, name


def test_the_job_api_is_exported() -> None:
    for name in ("load_job", "plan_job", "run_job", "arun", "running_emulator", "Ledger"):
        assert name in pipelines.__all__
