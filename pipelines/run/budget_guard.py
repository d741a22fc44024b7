"""The budget as the runner sees it: the shared ledger, this run's ``--max-neurons`` on top,
and calls that never block the event loop.

The ledger is SQLite with ``BEGIN IMMEDIATE`` transactions, and another process may hold its
write lock for a while; so every ledger call runs on one dedicated thread (the ledger
serialises them anyway), and the event loop keeps answering signals, updating progress and
writing results meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pipelines.budget.records import format_neurons
from pipelines.core.errors import BudgetExhausted, BudgetStop

T = TypeVar("T")


class Budget(Protocol):
    """What the runner needs from the neuron ledger."""

    @property
    def daily_neurons(self) -> float: ...
    def reserve(self, job: str, model: str, neurons: float) -> Any: ...
    def commit(self, r: Any, actual_neurons: float) -> None: ...
    def release(self, r: Any) -> None: ...
    def available(self) -> float: ...
    def mark_exhausted(self, note: str = "") -> None: ...
    def hold(self, key: str, job: str, model: str, neurons: float) -> Any: ...
    def settle_hold(self, key: str, actual_neurons: float | None) -> bool: ...


class LedgerLike(Budget, Protocol):
    @property
    def reserve_neurons(self) -> float: ...


@dataclass
class RunBudget:
    """The ledger plus this run's own ``--max-neurons`` ceiling."""

    ledger: LedgerLike
    max_neurons: float | None = None
    spent: float = 0.0
    held: float = 0.0
    _holds: dict[str, float] = field(default_factory=dict)  # this run's holds, still open

    @property
    def daily_neurons(self) -> float:
        """What a day gives this account's jobs (the cap less the reserve)."""
        return self.ledger.daily_neurons - self.ledger.reserve_neurons

    def _room(self) -> float:
        if self.max_neurons is None:
            return float("inf")
        return self.max_neurons - self.spent - self.held

    def reserve(self, job: str, model: str, neurons: float) -> Any:
        if self.max_neurons is not None and neurons > self._room():
            self._refuse(neurons)
        r = self.ledger.reserve(job, model, neurons)
        self.held += neurons
        return r

    def _refuse(self, neurons: float) -> None:
        assert self.max_neurons is not None
        if neurons > self.max_neurons:
            raise BudgetExhausted(
                f"one request needs {format_neurons(neurons)} neurons, more than --max-neurons "
                f"({self.max_neurons:,}) allows in a whole run; raise --max-neurons (or "
                "budget.max_neurons)",
                reason=BudgetStop.CANNOT_FIT,
            )
        used = self.spent + self.held
        raise BudgetExhausted(
            f"--max-neurons reached ({format_neurons(used)} / {self.max_neurons:,} neurons "
            "this run, in flight included); the next run goes on from here",
            reason=BudgetStop.RUN_CAP,
        )

    def commit(self, r: Any, actual_neurons: float) -> None:
        self.ledger.commit(r, actual_neurons)
        self.held -= r.neurons
        self.spent += actual_neurons

    def release(self, r: Any) -> None:
        self.ledger.release(r)
        self.held -= r.neurons

    def available(self) -> float:
        return max(0.0, min(self.ledger.available(), self._room()))

    def mark_exhausted(self, note: str = "") -> None:
        self.ledger.mark_exhausted(note)

    def hold(self, key: str, job: str, model: str, neurons: float) -> Any:
        """Hold ``neurons`` for a Batch API payload (see :mod:`pipelines.budget.holds`)."""
        if self.max_neurons is not None and neurons > self._room():
            self._refuse(neurons)
        held = self.ledger.hold(key, job, model, neurons)
        self.held += neurons
        self._holds[key] = neurons
        return held

    def settle_hold(self, key: str, actual_neurons: float | None) -> bool:
        """Settle a hold: this run's (counted against --max-neurons) or an earlier run's."""
        settled = self.ledger.settle_hold(key, actual_neurons)
        mine = self._holds.pop(key, None)
        if mine is not None:
            self.held -= mine
            self.spent += actual_neurons or 0.0
        return settled


class AsyncBudget:
    """A :class:`Budget` whose calls run on one thread of their own, off the event loop."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipelines-ledger")

    @property
    def daily_neurons(self) -> float:
        return float(self.budget.daily_neurons)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def reserve(self, job: str, model: str, neurons: float) -> Any:
        return await self._call(self.budget.reserve, job, model, neurons)

    async def commit(self, r: Any, actual_neurons: float) -> None:
        await self._call(self.budget.commit, r, actual_neurons)

    async def release(self, r: Any) -> None:
        await self._call(self.budget.release, r)

    async def available(self) -> float:
        return await self._call(self.budget.available)

    async def mark_exhausted(self, note: str = "") -> None:
        await self._call(self.budget.mark_exhausted, note)

    async def hold(self, key: str, job: str, model: str, neurons: float) -> Any:
        return await self._call(self.budget.hold, key, job, model, neurons)

    async def settle_hold(self, key: str, actual_neurons: float | None) -> bool:
        return await self._call(self.budget.settle_hold, key, actual_neurons)

    def close(self) -> None:
        """Wait for the calls under way (a commit must reach the ledger), then stop."""
        self._thread.shutdown(wait=True)
