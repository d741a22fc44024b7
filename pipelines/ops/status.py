"""``pipelines status``: where each job stands, from files on this machine only.

Rows come from the input's cheap count and the output's Parquet footer, the last run from
the manifest, today's neurons from the ledger, and the days left from the neurons a row
has cost so far. Nothing here touches the network or a job's lock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.budget import Ledger, effective_budget, format_neurons, resolve_account
from pipelines.core.errors import PipelinesError
from pipelines.core.shard import Shard, part_of
from pipelines.job.paths import job_paths
from pipelines.job.spec import Job
from pipelines.ops.locks import current_holder
from pipelines.ops.manifest import manifest_path_for, neurons_per_row, read_manifest
from pipelines.output.batches import BatchBook
from pipelines.output.store import failures_path_for
from pipelines.run.report import StopReason, days_left


@dataclass
class JobStatus:
    """One job's standing; ``None`` where a figure cannot be known cheaply."""

    job: str
    job_file: str | None
    model: str
    output: str
    priority: int
    rows_total: int | None = None
    rows_done: int = 0
    rows_failed: int = 0
    rows_failed_retryable: int = 0
    rows_pending: int | None = None
    running: str | None = None  # "pid 1234 since 09:12 UTC" while a run holds the lock
    last_run_id: str | None = None
    last_run_ended: str | None = None
    last_run_status: str | None = None
    last_run_exit_code: int | None = None
    last_run_message: str = ""
    neurons_today: float = 0.0
    neurons_total: float = 0.0  # every run: Cloudflare's, and what rehearsals would have cost
    neurons_paid: float = 0.0  # only what Cloudflare billed
    neurons_per_row: float | None = None
    daily_neurons: int | None = None
    reserve: int | None = None
    days_left: float | None = None
    rows_in_flight: int = 0  # in Batch API payloads not collected yet
    batches: list[dict[str, Any]] = field(default_factory=list)  # those payloads
    problems: list[str] = field(default_factory=list)
    # a sharded output (--shard I/N): the parts found, "I/N" each
    shards: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.days_left is not None and math.isinf(self.days_left):
            out["days_left"] = None
        return out


def _parquet_rows(path: Any) -> int:
    return int(pq.ParquetFile(path).metadata.num_rows)


def _failures(job: Job, status: JobStatus) -> None:
    path = failures_path_for(job.output_path)
    if not path.exists():
        return
    try:
        table = pq.read_table(path, columns=["retryable"])
    except (OSError, pa.ArrowException) as exc:
        status.problems.append(f"{path}: unreadable ({exc})")
        return
    status.rows_failed = table.num_rows
    status.rows_failed_retryable = int(table.column("retryable").to_pylist().count(True))


def _batches(job: Job, status: JobStatus, now: float) -> None:
    """The Batch API payloads in flight, from the output's batch book (read only)."""
    book = BatchBook(job_paths(job.output_path).work, read_only=True)
    try:
        booked = book.batches()
    except PipelinesError as exc:
        status.problems.append(exc.message)
        return
    finally:
        book.close()
    for batch in booked:
        since = batch.submitted if batch.submitted is not None else batch.created
        status.batches.append(
            {
                "request_id": batch.request_id,  # None: its submission was never recorded
                "age_s": max(0.0, now - since),
                "requests": batch.items,
                "rows": batch.rows,
                "neurons_held": batch.neurons,
                "model": batch.model,
            }
        )
    status.rows_in_flight = sum(b.rows for b in booked)


def _source_rows(job: Job, status: JobStatus) -> None:
    from pipelines.sources import open_source

    try:
        # an s3:// input is counted in its local mirror, as the last run staged it
        status.rows_total = open_source(job, stage=False).count()
    except PipelinesError as exc:
        status.problems.append(exc.message)


def _manifest(job: Job, status: JobStatus) -> None:
    try:
        manifest = read_manifest(job.output_path)
    except PipelinesError as exc:
        status.problems.append(exc.message)
        return
    if manifest is None:
        return
    last, totals, history = _parts(manifest)
    if last is None or totals is None or history is None:
        status.problems.append(
            f"{manifest_path_for(job.output_path)}: not a manifest this "
            "version understands; the next run writes a new one"
        )
        return
    status.last_run_id = _text(last.get("run_id"))
    status.last_run_ended = _text(last.get("ended_at"))
    status.last_run_status = _text(last.get("stop_reason")) or _text(last.get("status"))
    code = last.get("exit_code")
    status.last_run_exit_code = code if isinstance(code, int) else None
    status.last_run_message = str(last.get("message") or "")
    runs = [h for h in history if isinstance(h, dict)]
    status.neurons_total = _number(
        totals.get("neurons"), sum(_number(h.get("neurons")) for h in runs)
    )
    paid = sum(_number(h.get("neurons")) for h in runs if h.get("paid") is True)
    status.neurons_paid = _number(totals.get("paid_neurons"), paid)
    status.neurons_per_row = neurons_per_row(manifest, job.task.model)


def _parts(manifest: Any) -> tuple[Any, Any, Any]:
    """``last_run``, ``totals`` and ``history`` when each has the right shape, else None."""
    if not isinstance(manifest, dict):
        return None, None, None
    last = manifest.get("last_run") or {}
    totals = manifest.get("totals") or {}
    history = manifest.get("history") or []
    return (
        last if isinstance(last, dict) else None,
        totals if isinstance(totals, dict) else None,
        history if isinstance(history, list) else None,
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any, default: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return default
    return float(value)


def _parts_of(job: Job) -> list[Shard]:
    """The shards whose parts are in the job's output folder (sharded runs)."""
    folder = job.dataset_path
    if job.shard is not None or not folder.is_dir():
        return []
    found = (part_of(p.name) for p in folder.glob("part-*-of-*.parquet"))
    return sorted((s for s in found if s is not None), key=lambda s: (s.count, s.index))


def _sum_parts(status: JobStatus, job: Job, parts: list[Shard]) -> None:
    """A sharded output's standing: its parts' rows, failures, runs and neurons together."""
    status.output = str(job.dataset_path.resolve())
    status.shards = [str(part) for part in parts]
    for part in parts:
        one = JobStatus(job.name, None, job.task.model, "", job.priority)
        sharded = job.sharded(part)
        output = sharded.output_path
        try:
            status.rows_done += _parquet_rows(output)
        except (OSError, pa.ArrowException) as exc:
            status.problems.append(f"{output}: unreadable ({exc})")
        _failures(sharded, one)
        _manifest(sharded, one)
        status.rows_failed += one.rows_failed
        status.rows_failed_retryable += one.rows_failed_retryable
        status.neurons_total += one.neurons_total
        status.neurons_paid += one.neurons_paid
        status.problems += one.problems
        if (one.last_run_ended or "") > (status.last_run_ended or ""):
            for name in ("id", "ended", "status", "exit_code", "message"):
                setattr(status, f"last_run_{name}", getattr(one, f"last_run_{name}"))
            status.neurons_per_row = one.neurons_per_row
        holder = current_holder(output)
        if holder is not None and status.running is None:
            status.running = f"shard {part}: {holder.describe()}"


def job_status(job: Job, *, ledger: Ledger | None = None) -> JobStatus:
    """Everything :func:`collect_status` shows for one job."""
    output = job.output_path
    status = JobStatus(
        job=job.name,
        job_file=str(job.file) if job.file is not None else None,
        model=job.task.model,
        output=str(output.resolve()),
        priority=job.priority,
    )
    parts = _parts_of(job)
    if parts:
        _sum_parts(status, job, parts)
    elif output.exists():
        try:
            status.rows_done = _parquet_rows(output)
        except (OSError, pa.ArrowException) as exc:
            status.problems.append(f"{output}: unreadable ({exc})")
    if not parts:
        _failures(job, status)
    _batches(job, status, time.time())
    _source_rows(job, status)
    if status.rows_total is not None:
        # Retryable failures are sent again by the next run, so they are still pending.
        permanent = status.rows_failed - status.rows_failed_retryable
        status.rows_pending = max(0, status.rows_total - status.rows_done - permanent)
    holder = current_holder(output) if not parts else None
    if holder is not None:
        status.running = holder.describe()
    if not parts:
        _manifest(job, status)
    try:
        budget = effective_budget(job.budget, None)
    except PipelinesError as exc:
        status.problems.append(exc.message)
        return status
    status.daily_neurons, status.reserve = budget.daily_neurons, budget.reserve
    if ledger is not None:
        status.neurons_today = sum(
            (r["committed"] + r["reserved"] for r in ledger.by_job_model() if r["job"] == job.name),
            0.0,
        )
    per_day = budget.daily_neurons - budget.reserve
    if status.rows_pending == 0:
        status.days_left = 0.0
    elif status.rows_pending is not None and status.neurons_per_row is not None:
        # the same arithmetic as a run's budget-stop note
        status.days_left = days_left(status.rows_pending, status.neurons_per_row, per_day)
    return status


def collect_status(jobs: Iterable[Job], *, account: str | None = None) -> list[JobStatus]:
    """:func:`job_status` of every job, sharing one read of the ledger."""
    jobs = list(jobs)
    with Ledger(account=resolve_account(account)) as ledger:
        return [job_status(job, ledger=ledger) for job in jobs]


def _n(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _days(value: float | None) -> str:
    if value is None:
        return "?"
    if math.isinf(value):
        return "never"
    return "0" if value == 0 else f"{max(value, 0.1):.1f}"


def _result(s: JobStatus) -> str:
    if s.running:
        return "running"
    if s.last_run_status is None:
        return "never run"
    try:
        words = StopReason(s.last_run_status).words
    except ValueError:  # a manifest from before stop reasons: its status word
        words = s.last_run_status
    return f"{words} ({s.last_run_exit_code})"


def _when(s: JobStatus) -> str:
    if not s.last_run_ended:
        return "-"
    return s.last_run_ended.replace("T", " ").removesuffix("Z")[:16]


def _age(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m" if minutes else f"{int(seconds)}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours < 48 else f"{hours // 24}d {hours % 24}h"


# Payloads listed one by one; beyond that, a count.
SHOWN_BATCHES = 10


def _flight_lines(s: JobStatus) -> list[str]:
    """The Batch API payloads of a job still in flight (the next run collects them)."""
    if not s.batches:
        return []
    held = sum(b["neurons_held"] for b in s.batches)
    n = len(s.batches)
    lines = [
        f"{s.job}: {n:,} batch{'' if n == 1 else 'es'} in flight, {s.rows_in_flight:,} rows, "
        f"{format_neurons(held)} neurons held (the next run collects them)"
    ]
    for b in s.batches[:SHOWN_BATCHES]:
        what = (
            f"submitted {_age(b['age_s'])} ago"
            if b["request_id"]
            else f"its submission unconfirmed, {_age(b['age_s'])} ago"
        )
        lines.append(
            f"  {b['request_id'] or '?'}  {what}, {b['requests']:,} requests, "
            f"{b['rows']:,} rows, {format_neurons(b['neurons_held'])} neurons held"
        )
    if n > SHOWN_BATCHES:
        lines.append(f"  and {n - SHOWN_BATCHES:,} more (pipelines status --json lists them)")
    return lines


def render_table(statuses: list[JobStatus]) -> str:
    """A table for people, then one line per job that has something to say."""
    header = (
        "JOB",
        "TOTAL",
        "DONE",
        "PENDING",
        "FAILED",
        "LAST RUN (UTC)",
        "RESULT",
        "NEURONS TODAY",
        "PAID TOTAL",
        "REHEARSED",
        "DAYS LEFT",
    )
    rows = [header]
    for s in statuses:
        rows.append(
            (
                s.job,
                _n(s.rows_total),
                _n(s.rows_done),
                _n(s.rows_pending),
                _n(s.rows_failed),
                _when(s),
                _result(s),
                format_neurons(s.neurons_today),
                format_neurons(s.neurons_paid),
                format_neurons(max(0.0, s.neurons_total - s.neurons_paid)),
                _days(s.days_left),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    left = {0, 5, 6}
    lines = [
        "  ".join(
            cell.ljust(widths[i]) if i in left else cell.rjust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]
    for s in statuses:
        if s.running:
            lines.append(f"{s.job}: running ({s.running})")
        elif s.last_run_message and s.last_run_status not in ("completed", "done"):
            lines.append(f"{s.job}: {s.last_run_message}")
        lines.extend(_flight_lines(s))
        lines.extend(f"{s.job}: {p}" for p in s.problems)
    if any(s.days_left is None and s.rows_pending for s in statuses):
        lines.append("days left: ? until a run has spent neurons (it prices a row)")
    return "\n".join(lines)


__all__ = ["JobStatus", "collect_status", "job_status", "render_table"]
