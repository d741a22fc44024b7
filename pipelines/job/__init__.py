"""Job files: the YAML a user writes, validated into a :class:`Job`."""

from __future__ import annotations

from pipelines.job.spec import (
    BudgetSpec,
    Job,
    LimitsSpec,
    OutputSpec,
    SourceSpec,
    TaskSpec,
)

__all__ = ["BudgetSpec", "Job", "LimitsSpec", "OutputSpec", "SourceSpec", "TaskSpec"]
