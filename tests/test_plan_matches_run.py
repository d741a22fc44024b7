"""``plan`` counts what ``run`` sends: on every sample job, the planned requests are the
requests the run makes (the two share one pending-calls generator), and the planned rows
are the rows the run answers or fails."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from pipelines.job.load import load_job
from pipelines.ops.jobset import arun
from pipelines.run.plan import plan_job
from pipelines.run.settings import RunSettings

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("job_file", sorted((ROOT / "jobs").glob("*.yaml")), ids=lambda p: p.stem)
def test_plan_counts_the_requests_the_run_sends(job_file: Path, tmp_path: Path) -> None:
    raw = yaml.safe_load(job_file.read_text())
    raw["source"]["path"] = str((job_file.parent / raw["source"]["path"]).resolve())
    raw["output"]["path"] = str(tmp_path / Path(raw["output"]["path"]).name)
    if "images" in raw["output"]:  # an image job's files go there too
        raw["output"]["images"] = str(tmp_path / Path(raw["output"]["images"]).name)
    raw.setdefault("limits", {})["requests_per_minute"] = 100_000  # no 3021, no retries
    raw.pop("budget", None)  # the whole job, not what one run's cap allows
    copy = tmp_path / job_file.name
    copy.write_text(yaml.safe_dump(raw))
    job = load_job(copy)
    settings = RunSettings(provider="emulator", use_cache=False)

    plan = plan_job(job, settings)
    report = asyncio.run(arun(job, settings))

    assert plan.requests > 0
    assert report.requests == plan.requests, (plan, report)
    assert report.rows_done + report.rows_failed == plan.rows_pending
    assert report.rows_failed == plan.rows_unsendable  # only rows refused before sending
