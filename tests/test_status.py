"""``pipelines status``: rows, failures, last run, neurons and days left, from local files."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from pipelines.budget import Ledger
from pipelines.cli import main
from pipelines.job.load import load_job
from pipelines.job.spec import Job
from pipelines.ops.locks import JobLock
from pipelines.ops.manifest import write_manifest
from pipelines.ops.status import collect_status, render_table
from pipelines.output.store import failures_path_for
from pipelines.run.report import RunReport, StopReason

NOW = datetime(2026, 11, 28, 0, 5, tzinfo=UTC)


def make_job(tmp: Path, name: str = "st-job", rows: int = 10) -> Path:
    lines = ["doc_id,text", *(f"{i},text {i}" for i in range(rows))]
    (tmp / f"{name}.csv").write_text("\n".join(lines) + "\n")
    job = tmp / f"{name}.yaml"
    job.write_text(
        f"name: {name}\nsource: {{kind: csv, path: {name}.csv, key: doc_id}}\n"
        'task: {kind: embed, model: "@cf/baai/bge-small-en-v1.5", input: text}\n'
        f"output: {{path: out/{name}.parquet}}\n"
        "budget: {daily_neurons: 3, reserve: 1}\n"
    )
    return job


def progress(job: Job) -> None:
    """As if runs had written 4 rows and 2 failures (1 retryable) for 2 neurons."""
    out = job.output_path
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"_key": ["0", "1", "2", "3"]}), out)
    failures = pa.table({"_key": ["4", "5"], "retryable": [True, False]})
    pq.write_table(failures, failures_path_for(out))
    report = RunReport(
        job=job.name,
        run_id="r1",
        stop_reason=StopReason.DAY_CAP,
        rows_done=4,
        rows_failed=2,
        neurons=2.0,
        message="daily neuron cap reached",
    )
    write_manifest(job, report, started_at=NOW, ended_at=NOW, job_hash="h")
    with Ledger(daily_neurons=3) as ledger:
        r = ledger.reserve(job.name, job.task.model, 1.5)
        ledger.commit(r, 1.5)
        other = ledger.reserve("someone-else", job.task.model, 0.5)
        ledger.commit(other, 0.5)


def test_status_of_a_job_part_done(tmp_path: Path) -> None:
    job = load_job(make_job(tmp_path))
    progress(job)
    [s] = collect_status([job])
    assert (s.rows_total, s.rows_done, s.rows_failed, s.rows_failed_retryable) == (10, 4, 2, 1)
    assert s.rows_pending == 5  # the retryable failure is sent again
    assert s.last_run_status == "day_cap" and s.last_run_exit_code == 3
    assert s.last_run_ended == "2026-11-28T00:05:00Z"
    assert s.neurons_today == 1.5 and s.neurons_total == 2.0
    assert s.neurons_per_row == 0.5
    assert s.days_left == 5 * 0.5 / (3 - 1)
    assert s.running is None and not s.problems
    table = render_table([s])
    assert "st-job" in table and "stopped at the daily neuron cap (3)" in table
    assert "2026-11-28 00:05" in table
    assert "st-job: daily neuron cap reached" in table


def test_never_run_and_running(tmp_path: Path) -> None:
    job = load_job(make_job(tmp_path))
    [s] = collect_status([job])
    assert (s.rows_total, s.rows_done, s.rows_pending) == (10, 0, 10)
    assert s.last_run_status is None and s.days_left is None and s.neurons_total == 0
    assert "never run" in render_table([s])
    with JobLock.for_job(job):
        [s] = collect_status([job])
        assert s.running is not None and s.running.startswith("pid ")
        assert "running" in render_table([s])


def test_missing_input_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    job = load_job(make_job(tmp_path))
    (tmp_path / "st-job.csv").unlink()
    [s] = collect_status([job])
    assert s.rows_total is None and s.rows_pending is None and s.problems


def test_cli_table_and_json(tmp_path: Path) -> None:
    make_job(tmp_path, "a-job")
    progress(load_job(make_job(tmp_path, "b-job")))
    runner = CliRunner()
    result = runner.invoke(main, ["status", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "a-job" in result.output and "b-job" in result.output
    result = runner.invoke(main, ["status", str(tmp_path / "b-job.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    [b] = data["jobs"]
    assert b["job"] == "b-job" and b["rows_pending"] == 5 and b["days_left"] == 1.25
    result = runner.invoke(main, ["status", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
