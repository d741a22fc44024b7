"""What a run did, and the exit code that says so."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pipelines.errors import PipelinesError

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
