"""What a run did, why it stopped (a typed reason, never read back from a message), and the
exit code that says so."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

from pipelines.core.errors import BudgetStop, PipelinesError

Status = Literal["completed", "failed_rows", "budget", "interrupted", "aborted"]


class StopReason(Enum):
    """Why a run ended."""

    DONE = "done"  # every pending row was processed
    ROWS_FAILED = "rows_failed"  # done, but some rows failed in this run
    DAY_CAP = "day_cap"  # the day's neurons are used up (ours or Cloudflare's): resumes at 00:00
    RUN_CAP = "run_cap"  # --max-neurons is spent: the next run goes on
    CANNOT_FIT = "cannot_fit"  # a request costs more than a whole day (or run) allows
    INTERRUPTED = "interrupted"  # Ctrl-C / SIGTERM
    ABORTED = "aborted"  # an error that stops the run (credentials, model, disk)

    @classmethod
    def of_budget(cls, reason: BudgetStop) -> StopReason:
        return _OF_BUDGET[reason]

    @property
    def exit_code(self) -> int:
        return _EXIT_CODES[self]

    @property
    def status(self) -> Status:
        """The coarse status word of manifests and summaries."""
        return _STATUS[self]

    @property
    def words(self) -> str:
        """How a run that stopped for this reason is described to people."""
        return _WORDS[self]

    @property
    def resumes_after_reset(self) -> bool:
        """Whether waiting for 00:00 UTC lets the run go on (what ``--wait`` waits for)."""
        return self is StopReason.DAY_CAP


_OF_BUDGET = {
    BudgetStop.DAY_CAP: StopReason.DAY_CAP,
    BudgetStop.RUN_CAP: StopReason.RUN_CAP,
    BudgetStop.CANNOT_FIT: StopReason.CANNOT_FIT,
}
_WORDS = {
    StopReason.DONE: "done",
    StopReason.ROWS_FAILED: "done, some rows failed",
    StopReason.DAY_CAP: "stopped at the daily neuron cap",
    StopReason.RUN_CAP: "stopped at --max-neurons",
    StopReason.CANNOT_FIT: "stopped: some rows can never fit the budget",
    StopReason.INTERRUPTED: "interrupted",
    StopReason.ABORTED: "aborted",
}
_EXIT_CODES = {
    StopReason.DONE: 0,
    StopReason.ROWS_FAILED: 1,
    StopReason.DAY_CAP: 3,
    StopReason.RUN_CAP: 3,
    StopReason.CANNOT_FIT: 3,
    StopReason.INTERRUPTED: 130,
    StopReason.ABORTED: 2,
}
_STATUS: dict[StopReason, Status] = {
    StopReason.DONE: "completed",
    StopReason.ROWS_FAILED: "failed_rows",
    StopReason.DAY_CAP: "budget",
    StopReason.RUN_CAP: "budget",
    StopReason.CANNOT_FIT: "budget",
    StopReason.INTERRUPTED: "interrupted",
    StopReason.ABORTED: "aborted",
}


@dataclass
class RunReport:
    """What a run did; the CLI prints it and exits with ``exit_code``."""

    job: str
    run_id: str
    stop_reason: StopReason = StopReason.DONE
    rows_total: int | None = None
    rows_skipped: int = 0
    rows_done: int = 0
    rows_failed: int = 0
    rows_cached: int = 0  # answered from the result cache: no request, no neurons
    rows_duplicate: int = 0  # rows whose key came earlier in the input: not processed
    rows_truncated: int = 0  # generate: answers cut off at max_tokens (stored, marked)
    answers_retried: int = 0  # generate: answers that broke the output schema, asked again
    rows_missing: int = 0  # image jobs: rows done whose file is gone (--repair makes them)
    rows_repaired: int = 0  # image jobs: of those, made again by this run (--repair)
    requests: int = 0  # HTTP requests sent (batch mode: submissions and polls)
    batches_submitted: int = 0  # batch mode: payloads submitted by this run
    batches_collected: int = 0  # payloads collected by this run (its own and earlier runs')
    batches_in_flight: int = 0  # payloads still in flight when the run ended
    rows_in_flight: int = 0  # their rows
    neurons: float = 0.0
    wall_s: float = 0.0
    output_rows: int = 0
    failures_total: int = 0
    message: str = ""
    error: PipelinesError | None = field(default=None, repr=False)

    @property
    def status(self) -> Status:
        return self.stop_reason.status

    @property
    def exit_code(self) -> int:
        return self.stop_reason.exit_code

    @property
    def rows_left(self) -> int | None:
        """Rows of the input neither in the output nor failed (None: input size unknown)."""
        if self.rows_total is None:
            return None
        return max(0, self.rows_total - self.output_rows - self.failures_total)


def plural(n: int, noun: str) -> str:
    """``1 row``, ``2 rows``, ``1,024 rows``."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def days_left(rows_left: int, neurons_per_row: float, per_day: float) -> float | None:
    """Days of the daily budget the rows left need at the rate seen (None: unknown)."""
    if neurons_per_row <= 0 or per_day <= 0:
        return None
    return max(0.1, rows_left * neurons_per_row / per_day)


RESUME_NOTE = "resumes after 00:00 UTC"


def budget_stop_message(
    reason: StopReason, stop_message: str, report: RunReport, per_row: float, per_day: float
) -> str:
    """Why the budget stopped a run, how many rows are left, and when it goes on."""
    message = stop_message
    left = report.rows_left
    if left is not None:
        message += f"; {plural(left, 'row')} left"
        days = days_left(left, per_row, per_day) if reason.resumes_after_reset else None
        if days is not None:
            message += f" ≈ {days:.1f} more days"
    return message + (f"; {RESUME_NOTE}" if reason.resumes_after_reset else "")
