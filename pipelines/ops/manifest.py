"""``<output stem>.manifest.json``: what the last run of a job did, and a short history.

Written atomically after every run next to the output, so people and schedulers can see
when a job last ran, with which job file and tool version, what it cost and how it ended,
without opening Parquet. Every string passes through :func:`redact`: the API token never
lands in a manifest.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.core.errors import OutputError
from pipelines.core.files import atomic_write
from pipelines.job.paths import job_paths
from pipelines.job.spec import Job
from pipelines.ops.logs import redact, redact_value
from pipelines.output.store import failures_path_for
from pipelines.run.report import RunReport

__all__ = [
    "HISTORY_RUNS",
    "job_file_hash",
    "manifest_path_for",
    "neurons_per_row",
    "read_manifest",
    "redact",
    "write_manifest",
]

MANIFEST_VERSION = 1
HISTORY_RUNS = 30


def manifest_path_for(output: Path) -> Path:
    """``<output stem>.manifest.json`` next to the output (like the failures file)."""
    return job_paths(output).manifest


def job_file_hash(path: Path | None) -> str:
    """sha256 of the job file's bytes (empty when the job did not come from a file)."""
    if path is None:
        return ""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def iso_utc(when: datetime) -> str:
    """``2026-11-28T09:12:03Z``; a naive time is taken as UTC."""
    aware = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return aware.isoformat(timespec="seconds").replace("+00:00", "Z")


def read_manifest(output_path: Path) -> dict[str, Any] | None:
    """The manifest of ``output_path``; None when there is none; OutputError when unreadable."""
    path = manifest_path_for(output_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OutputError(f"cannot read {path} ({exc.strerror or exc})") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise OutputError(f"{path} is not valid JSON ({exc}); delete it to start over") from exc
    if not isinstance(data, dict):
        raise OutputError(f"{path} is not a pipelines manifest; delete it to start over")
    return data


def neurons_per_row(manifest: dict[str, Any] | None, model: str | None = None) -> float | None:
    """Neurons a row cost over the recorded runs (of ``model`` when given), or None."""
    if not manifest:
        return None
    neurons = rows = 0.0
    for run in manifest.get("history", []):
        if model is not None and run.get("model") not in (None, model):
            continue
        neurons += float(run.get("neurons") or 0.0)
        rows += float(run.get("rows_done") or 0)
    return neurons / rows if rows > 0 and neurons > 0 else None


def _last_run(
    job: Job,
    report: RunReport,
    *,
    started_at: datetime,
    ended_at: datetime,
    job_hash: str,
    provider: str | None,
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    from pipelines.core.version import __version__

    output = job.output_path
    run: dict[str, Any] = {
        "run_id": report.run_id,
        "job": job.name,
        "job_file": str(job.file.resolve()) if job.file is not None else None,
        "job_hash": job_hash,
        "tool_version": __version__,
        "provider": provider or job.provider,
        "model": job.task.model,
        "started_at": iso_utc(started_at),
        "ended_at": iso_utc(ended_at),
        "wall_s": round(report.wall_s, 3),
        "status": report.status,
        "stop_reason": report.stop_reason.value,
        "exit_code": report.exit_code,
        "message": report.message,
        "rows_total": report.rows_total,
        "rows_done": report.rows_done,
        "rows_failed": report.rows_failed,
        "rows_skipped": report.rows_skipped,
        "requests": report.requests,
        "neurons": report.neurons,
        "output_rows": report.output_rows,
        "failures_total": report.failures_total,
        "output": str(output.resolve()),
        "failures": str(failures_path_for(output).resolve()),
    }
    if job.images_path is not None:  # an image job: where its files are, and what was done
        run["images"] = str(job.images_path.resolve())
        run["images_missing"] = report.rows_missing - report.rows_repaired
        run["images_repaired"] = report.rows_repaired
    if report.error is not None:
        run["error"] = report.error.attrs()
    for key, value in (extra or {}).items():
        run.setdefault(key, value)
    return run


def _history_entry(job: Job, report: RunReport, run: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": report.run_id,
        "started_at": run["started_at"],
        "ended_at": run["ended_at"],
        "status": report.status,
        "stop_reason": report.stop_reason.value,
        "exit_code": report.exit_code,
        "provider": run["provider"],
        "paid": run.get("paid") is True,
        "model": job.task.model,
        "rows_done": report.rows_done,
        "rows_failed": report.rows_failed,
        "requests": report.requests,
        "neurons": report.neurons,
    }


def _totals(previous: dict[str, Any], report: RunReport, *, paid: bool) -> dict[str, Any]:
    """All runs ever, not just the history kept: what the job has cost so far. ``neurons``
    counts every run (local and emulator figures are what the rows would have cost);
    ``paid_neurons`` only what Cloudflare billed."""
    totals = previous.get("totals") if isinstance(previous.get("totals"), dict) else {}
    assert isinstance(totals, dict)
    return {
        "runs": int(totals.get("runs", 0)) + 1,
        "rows_done": int(totals.get("rows_done", 0)) + report.rows_done,
        "requests": int(totals.get("requests", 0)) + report.requests,
        "neurons": float(totals.get("neurons", 0.0)) + report.neurons,
        "paid_neurons": float(totals.get("paid_neurons", 0.0)) + (report.neurons if paid else 0.0),
    }


def write_manifest(
    job: Job,
    report: RunReport,
    *,
    started_at: datetime,
    ended_at: datetime,
    job_hash: str | None = None,
    provider: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Record ``report`` as the last run of ``job`` and add it to the history; the path.

    ``job_hash`` defaults to :func:`job_file_hash` of the job file; ``provider`` to the
    job's own setting (pass the one really used); ``extra`` adds fields to the last run.
    """
    path = manifest_path_for(job.output_path)
    try:
        previous = read_manifest(job.output_path) or {}
    except OutputError:
        previous = {}  # a damaged manifest only loses its history, never a run's record
    run = _last_run(
        job,
        report,
        started_at=started_at,
        ended_at=ended_at,
        job_hash=job_hash if job_hash is not None else job_file_hash(job.file),
        provider=provider,
        extra=extra,
    )
    history = [h for h in previous.get("history", []) if isinstance(h, dict)]
    history = [h for h in history if h.get("run_id") != report.run_id]
    history.append(_history_entry(job, report, run))
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "job": job.name,
        "output": run["output"],
        "failures": run["failures"],
        **({"images": run["images"]} if "images" in run else {}),
        "last_run": run,
        "totals": _totals(previous, report, paid=run.get("paid") is True),
        "history": history[-HISTORY_RUNS:],
    }
    text = redact(json.dumps(redact_value(manifest), indent=2, default=str)) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text)
    except OSError as exc:
        raise OutputError(f"cannot write {path} ({exc.strerror or exc})") from exc
    return path
