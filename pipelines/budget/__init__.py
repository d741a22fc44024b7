"""Neuron budgets: the shared SQLite ledger, the budget settings and their precedence."""

from __future__ import annotations

from pipelines.budget.clock import next_reset, seconds_until_reset, utc_today
from pipelines.budget.config import (
    EffectiveBudget,
    default_ledger_path,
    effective_budget,
    resolve_account,
)
from pipelines.budget.holds import Hold
from pipelines.budget.ledger import Ledger
from pipelines.budget.records import DayUsage, Reservation, format_neurons

__all__ = [
    "DayUsage",
    "EffectiveBudget",
    "Hold",
    "Ledger",
    "Reservation",
    "default_ledger_path",
    "effective_budget",
    "format_neurons",
    "next_reset",
    "resolve_account",
    "seconds_until_reset",
    "utc_today",
]
