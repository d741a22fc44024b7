"""What ``pipelines report`` shows, gathered from files on this machine only.

Each job's standing comes from :func:`pipelines.ops.status.job_status` (the input's count,
the output's footer, the failures file, the manifest); its runs over time and the neurons
of each UTC day from the manifest's history (every provider writes one, so rehearsals on
the emulator show too); the account's own total per day and its cap from the ledger; the
failure codes and a few example messages from the failures file. No network, no lock.

Every string that reaches the report passes through :func:`redact`: the API token (and
anything else :mod:`pipelines.core.secrets` knows as secret) never lands in it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.budget import Ledger, effective_budget, resolve_account
from pipelines.core.errors import PipelinesError
from pipelines.job.spec import Job
from pipelines.ops.logs import redact, redact_value
from pipelines.ops.manifest import read_manifest
from pipelines.ops.status import JobStatus, job_status
from pipelines.output.contact_sheet import sheet_section
from pipelines.output.store import failures_path_for

__all__ = ["FailureCode", "JobReport", "ReportData", "collect_report"]

EXAMPLES_PER_CODE = 3
MESSAGE_CHARS = 300  # an example message is there to recognise the failure, not to read it all


@dataclass
class FailureCode:
    """One kind of failure of one job: its error class, Cloudflare code, count, examples."""

    error: str
    code: int | None
    count: int
    examples: list[str] = field(default_factory=list)


# An image job's sheet in the report: its first rows, small (the page stays mail-able).
SHEET_IMAGES = 60
SHEET_SIZE = 128


@dataclass
class JobReport:
    """One job's part of the report."""

    status: JobStatus
    runs: list[dict[str, Any]] = field(default_factory=list)  # the manifest's history
    failures: list[FailureCode] = field(default_factory=list)
    cap: int | None = None
    output: str = ""  # as the job file writes it (an s3:// URL stays one)
    vectorize: dict[str, Any] | None = None  # the last run's Vectorize sink figures
    sheet: str = ""  # an image job's contact sheet (HTML: thumbnails as data URIs)


@dataclass
class ReportData:
    """Everything the page shows; ``days`` is the ledger's account, oldest day first."""

    generated_at: str
    account: str
    jobs: list[JobReport]
    days: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def neurons_by_day(self) -> dict[tuple[str, str, str], float]:
        """Neurons per ``(UTC day, job, model)`` from the runs the manifests recorded."""
        out: dict[tuple[str, str, str], float] = {}
        for job in self.jobs:
            for run in job.runs:
                day = str(run.get("started_at") or "")[:10]
                neurons = run.get("neurons")
                if len(day) != 10 or not isinstance(neurons, int | float) or neurons <= 0:
                    continue
                key = (day, job.status.job, str(run.get("model") or job.status.model))
                out[key] = out.get(key, 0.0) + float(neurons)
        return out


def _failure_codes(job: Job, problems: list[str]) -> list[FailureCode]:
    path = failures_path_for(job.output_path)
    if not path.exists():
        return []
    try:
        table = pq.read_table(path, columns=["error", "code", "message"])
    except (OSError, pa.ArrowException) as exc:
        problems.append(redact(f"{path}: unreadable ({exc})"))
        return []
    counts: Counter[tuple[str, int | None]] = Counter()
    examples: dict[tuple[str, int | None], list[str]] = {}
    for error, code, message in zip(
        table.column("error").to_pylist(),
        table.column("code").to_pylist(),
        table.column("message").to_pylist(),
        strict=True,
    ):
        key = (str(error or "?"), code if isinstance(code, int) else None)
        counts[key] += 1
        seen = examples.setdefault(key, [])
        text = redact(str(message or ""))[:MESSAGE_CHARS]
        if len(seen) < EXAMPLES_PER_CODE and text not in seen:
            seen.append(text)
    return [
        FailureCode(error=e, code=c, count=n, examples=examples[(e, c)])
        for (e, c), n in counts.most_common()
    ]


def _job_report(job: Job, ledger: Ledger | None, problems: list[str]) -> JobReport:
    status = job_status(job, ledger=ledger)
    status.problems = [redact(p) for p in status.problems]
    status.last_run_message = redact(status.last_run_message)
    runs: list[dict[str, Any]] = []
    try:
        manifest = read_manifest(job.output_path) or {}
    except PipelinesError as exc:
        problems.append(redact(exc.message))
        manifest = {}
    history = manifest.get("history")
    if isinstance(history, list):
        runs = [redact_value(h) for h in history if isinstance(h, dict)]
    try:
        cap: int | None = effective_budget(job.budget, None).daily_neurons
    except PipelinesError:
        cap = None  # job_status already noted the problem
    last = manifest.get("last_run")
    sink = last.get("vectorize") if isinstance(last, dict) else None
    return JobReport(
        status=status,
        runs=runs,
        failures=_failure_codes(job, problems),
        cap=cap,
        output=redact(job.output.path),
        vectorize=redact_value(sink) if isinstance(sink, dict) else None,
        sheet=_sheet(job, problems),
    )


def _sheet(job: Job, problems: list[str]) -> str:
    """An image job's contact sheet (its first rows' thumbnails); empty for other jobs."""
    if job.task.kind != "image" or not job.output_path.is_file():
        return ""
    try:
        fragment, _ = sheet_section(job, limit=SHEET_IMAGES, size=SHEET_SIZE)
    except PipelinesError as exc:
        problems.append(redact(exc.message))
        return ""
    # not redacted: thumbnails are base64 data a token's letters could occur in by chance,
    # and captions are the index's own keys and prompts, shown as the output holds them
    return fragment


def _days(ledger: Ledger, days: int) -> list[dict[str, Any]]:
    return [
        {"day": d.day, "cap": d.cap, "committed": d.committed, "exhausted": d.exhausted}
        for d in ledger.history(days)
    ]


def collect_report(
    jobs: Iterable[Job], *, generated_at: str, account: str | None = None, days: int = 30
) -> ReportData:
    """The report of ``jobs``: each job's standing, runs and failures, the account's days."""
    jobs = list(jobs)
    account_id = resolve_account(account)
    problems: list[str] = []
    with Ledger(account=account_id) as ledger:
        reports = [_job_report(job, ledger, problems) for job in jobs]
        history = _days(ledger, days)
    return ReportData(
        generated_at=generated_at,
        account=redact(account_id),
        jobs=reports,
        days=history,
        problems=problems,
    )
