"""The run manifest: fields, atomic write, capped history, totals, and no API token."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import pipelines
from pipelines.core.errors import OutputError
from pipelines.job.load import load_job
from pipelines.job.spec import Job
from pipelines.ops.manifest import (
    HISTORY_RUNS,
    manifest_path_for,
    neurons_per_row,
    read_manifest,
    write_manifest,
)
from pipelines.run.report import RunReport, StopReason

TOKEN = "cf-token-0123456789abcdef"
START = datetime(2026, 11, 28, 0, 5, tzinfo=UTC)


def make_job(tmp: Path) -> Job:
    (tmp / "corpus.csv").write_text("doc_id,text\n1,hello\n2,world\n")
    job = tmp / "job.yaml"
    job.write_text(
        "name: embed-corpus\nsource: {kind: csv, path: corpus.csv, key: doc_id}\n"
        'task: {kind: embed, model: "@cf/baai/bge-small-en-v1.5", input: text}\n'
        "output: {path: out/result.parquet}\n"
    )
    return load_job(job)


def report(n: int = 0, **kw: object) -> RunReport:
    fields: dict[str, object] = {
        "rows_total": 2,
        "rows_done": 2,
        "requests": 1,
        "neurons": 0.5,
        "wall_s": 1.25,
    }
    fields.update(kw)
    return RunReport(job="embed-corpus", run_id=f"run-{n}", **fields)  # type: ignore[arg-type]


def test_manifest_records_the_run(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    path = write_manifest(
        job,
        report(stop_reason=StopReason.DAY_CAP, message="daily neuron cap reached"),
        started_at=START,
        ended_at=START + timedelta(minutes=3),
        provider="cloudflare",
        extra={"account": "acct"},
    )
    assert path == tmp_path / "out" / "result.manifest.json"
    assert path == manifest_path_for(job.output_path)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    data = read_manifest(job.output_path)
    assert data is not None
    run = data["last_run"]
    assert run["run_id"] == "run-0" and run["job"] == "embed-corpus"
    assert run["job_file"] == str((tmp_path / "job.yaml").resolve())
    assert run["job_hash"] == hashlib.sha256((tmp_path / "job.yaml").read_bytes()).hexdigest()
    assert run["tool_version"] == pipelines.__version__
    assert run["provider"] == "cloudflare" and run["model"] == "@cf/baai/bge-small-en-v1.5"
    assert run["started_at"] == "2026-11-28T00:05:00Z"
    assert run["ended_at"] == "2026-11-28T00:08:00Z"
    assert (run["status"], run["exit_code"]) == ("budget", 3)
    assert run["rows_done"] == 2 and run["requests"] == 1 and run["neurons"] == 0.5
    assert run["output"] == str(job.output_path.resolve())
    assert run["failures"].endswith("result.failures.parquet")
    assert run["account"] == "acct"
    assert data["history"] == [
        {
            "run_id": "run-0",
            "started_at": "2026-11-28T00:05:00Z",
            "ended_at": "2026-11-28T00:08:00Z",
            "status": "budget",
            "stop_reason": "day_cap",
            "exit_code": 3,
            "provider": "cloudflare",
            "paid": False,
            "model": "@cf/baai/bge-small-en-v1.5",
            "rows_done": 2,
            "rows_failed": 0,
            "requests": 1,
            "neurons": 0.5,
        }
    ]


def test_history_keeps_the_last_30_and_totals_everything(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    for n in range(HISTORY_RUNS + 5):
        write_manifest(
            job, report(n), started_at=START, ended_at=START + timedelta(hours=n), job_hash="h"
        )
    data = read_manifest(job.output_path)
    assert data is not None
    assert len(data["history"]) == HISTORY_RUNS
    assert data["history"][-1]["run_id"] == f"run-{HISTORY_RUNS + 4}"
    assert data["history"][0]["run_id"] == "run-5"
    assert data["totals"]["runs"] == HISTORY_RUNS + 5
    assert data["totals"]["neurons"] == pytest.approx(0.5 * (HISTORY_RUNS + 5))
    assert data["last_run"]["job_hash"] == "h"
    assert neurons_per_row(data) == pytest.approx(0.25)


def test_totals_keep_paid_neurons_apart_from_rehearsals(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    for n, paid in enumerate([True, False, True]):
        write_manifest(job, report(n), started_at=START, ended_at=START, extra={"paid": paid})
    data = read_manifest(job.output_path)
    assert data is not None
    assert data["totals"]["neurons"] == pytest.approx(1.5)
    assert data["totals"]["paid_neurons"] == pytest.approx(1.0)
    assert [h["paid"] for h in data["history"]] == [True, False, True]
    assert neurons_per_row(data, "@cf/other/model") is None


def test_the_token_never_reaches_the_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = make_job(tmp_path)
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", TOKEN)
    write_manifest(
        job,
        report(stop_reason=StopReason.ABORTED, message=f"401 for Bearer {TOKEN}"),
        started_at=START,
        ended_at=START,
        extra={"headers": {"authorization": f"Bearer {TOKEN}"}, TOKEN: [TOKEN]},
    )
    text = manifest_path_for(job.output_path).read_text()
    assert TOKEN not in text
    data = json.loads(text)
    assert data["last_run"]["message"] == "401 for Bearer ***"
    assert data["last_run"]["headers"] == {"authorization": "Bearer ***"}


def test_missing_and_damaged_manifests(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    assert read_manifest(job.output_path) is None
    path = manifest_path_for(job.output_path)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(OutputError, match="not valid JSON"):
        read_manifest(job.output_path)
    write_manifest(job, report(7), started_at=START, ended_at=START)  # starts over
    data = read_manifest(job.output_path)
    assert data is not None and [h["run_id"] for h in data["history"]] == ["run-7"]
