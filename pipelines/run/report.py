"""What a run did, and the exit code that says so."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pipelines.core.errors import PipelinesError

Status = Literal["completed", "failed_rows", "budget", "interrupted", "aborted"]
EXIT_CODES: dict[Status, int] = {
    "completed": 0,
    "failed_rows": 1,
    "budget": 3,
    "interrupted": 130,
    "aborted": 2,
}


@dataclass
class RunReport:
    """What a run did; the CLI prints it and exits with ``exit_code``."""

    job: str
    run_id: str
    status: Status = "completed"
    rows_total: int | None = None
    rows_skipped: int = 0
    rows_done: int = 0
    rows_failed: int = 0
    rows_cached: int = 0  # answered from the result cache: no request, no neurons
    requests: int = 0
    neurons: float = 0.0
    wall_s: float = 0.0
    output_rows: int = 0
    failures_total: int = 0
    message: str = ""
    error: PipelinesError | None = field(default=None, repr=False)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]


def budget_stop_message(
    stop_message: str, report: RunReport, neurons_per_row: list[float], per_day: float
) -> str:
    """Why the budget stopped a run, how many rows are left, and when it goes on."""
    resume = "; resumes after 00:00 UTC"
    message = stop_message.removesuffix(resume)
    # a per-run cap, or a request bigger than a whole day, is not cured by midnight
    waits = "--max-neurons" not in message and "more than the daily budget" not in message
    if report.rows_total is not None:
        left = max(0, report.rows_total - report.output_rows - report.failures_total)
        message += f"; {left:,} rows left"
        neurons, rows = neurons_per_row
        if waits and rows and per_day > 0:
            message += f" ≈ {max(0.1, left * neurons / rows / per_day):.1f} more days"
    return message + (resume if waits else "")
