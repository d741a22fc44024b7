"""Issue 7 end to end against the emulator: a folder of jobs under one small cap runs in
priority order over several emulated nights, a running job cannot be started twice, and
no file a run writes contains the API token."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from pipelines.cli import main
from pipelines.emulator.server import RunningEmulator
from pipelines.job.load import load_jobs
from pipelines.ops.jobset import arun_jobs, overall_exit_code
from pipelines.run.settings import RunSettings

TOKEN = "tok-3f9a-very-secret"
BASE = "@cf/baai/bge-base-en-v1.5"  # 6,058 neurons / M tokens


pytestmark = pytest.mark.emulator(daily_neurons=3.0, rpm_scale=100, token=TOKEN)


@pytest.fixture
def emu(emu: RunningEmulator, env: dict[str, str]) -> RunningEmulator:
    """The shared emulator, with the environment pointing at it."""
    return emu


def make_job(folder: Path, name: str, priority: int, rows: int, cap: float = 3.0) -> None:
    pl.DataFrame(
        {
            "id": [f"{name}-{i}" for i in range(rows)],
            "text": [f"{name} document {i} about rivers and mountains" for i in range(rows)],
        }
    ).write_csv(folder / f"{name}.csv")
    (folder / f"{name}.yaml").write_text(
        f"""name: {name}
priority: {priority}
source: {{kind: csv, path: {name}.csv, key: id}}
task: {{kind: embed, model: "{BASE}", input: text}}
output: {{path: out/{name}.parquet, keep: [id]}}
limits: {{requests_per_minute: 100000}}
budget: {{daily_neurons: {cap}}}
"""
    )


def test_jobs_folder_runs_by_priority_and_finishes_over_several_nights(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    make_job(jobs, "low", priority=1, rows=300)
    make_job(jobs, "high", priority=9, rows=300)
    nights: list[dict[str, float]] = []

    async def next_night(_: float) -> None:
        nights.append({m: v["neurons"] for m, v in emu.stats()["models"].items()})
        emu.advance_day()

    reports = asyncio.run(arun_jobs(load_jobs([jobs]), RunSettings(wait=True), sleep=next_night))
    assert [r.job for r in reports] == ["high", "low"]
    assert all(r.status == "completed" for r in reports), reports
    assert overall_exit_code(reports) == 0
    assert len(nights) >= 2  # it took several emulated days
    for name in ("high", "low"):
        frame = pl.read_parquet(jobs / f"out/{name}.parquet")
        assert frame.height == 300 and frame["id"].n_unique() == 300
    manifest = json.loads((jobs / "out/high.manifest.json").read_text())
    statuses = [run["status"] for run in manifest["history"]]
    assert statuses[0] == "budget" and statuses[-1] == "completed"


def test_the_first_night_goes_to_the_higher_priority(tmp_path: Path, emu: RunningEmulator) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    make_job(jobs, "low", priority=1, rows=300)
    make_job(jobs, "high", priority=9, rows=300)
    result = CliRunner().invoke(main, ["run", "--no-progress", str(jobs)])
    assert result.exit_code == 3, result.output
    high = pl.read_parquet(jobs / "out/high.parquet").height
    low_file = jobs / "out/low.parquet"
    low = pl.read_parquet(low_file).height if low_file.exists() else 0
    assert high > 0 and low == 0
    assert emu.stats()["neurons_today"] <= 3.0


def test_a_running_job_refuses_a_second_run(tmp_path: Path, emu: RunningEmulator) -> None:
    emu.config.latency_ms = 200
    emu.config.daily_neurons = 1e6
    make_job(tmp_path, "slow", priority=0, rows=2000, cap=1e6)
    (tmp_path / "slow.yaml").write_text(
        (tmp_path / "slow.yaml")
        .read_text()
        .replace(
            "limits: {requests_per_minute: 100000}",
            "limits: {requests_per_minute: 100000, batch_size: 10, concurrency: 2}",
        )
    )
    first = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "run", "--no-progress", str(tmp_path / "slow.yaml")],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "out/.slow.parquet.pipelines").exists():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        second = CliRunner().invoke(main, ["run", "--no-progress", str(tmp_path / "slow.yaml")])
        assert second.exit_code == 2
        assert "already running" in second.output
    finally:
        first.kill()
        first.communicate()


def test_no_file_a_run_writes_contains_the_token(tmp_path: Path, emu: RunningEmulator) -> None:
    make_job(tmp_path, "secret", priority=0, rows=50, cap=1e6)
    emu.config.daily_neurons = 1e6
    result = CliRunner().invoke(
        main, ["run", "--no-progress", "--log-format", "json", str(tmp_path / "secret.yaml")]
    )
    assert result.exit_code == 0, result.output
    assert TOKEN not in result.output
    state = Path(os.environ["PIPELINES_STATE_DIR"])
    written = [p for root in (tmp_path, state) for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "secret.manifest.json" for p in written)
    for path in written:
        assert TOKEN.encode() not in path.read_bytes(), path
