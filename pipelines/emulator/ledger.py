"""The emulator's books: the emulated UTC day, neurons billed, per-minute windows and counters.

The emulated day is the clock's UTC date plus an offset that ``advance-day`` bumps, so usage
is kept per day and "clearing the day" is just moving to a day with nothing billed yet.
Per-minute limits use a sliding 60-second window of accepted requests per model: a slot
frees exactly 60 s after the request that took it, which is what ``Retry-After`` reports.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from pipelines.catalog.metering import Usage
from pipelines.emulator.clock import Clock, SystemClock

WINDOW_S = 60.0


@dataclass
class ModelTotals:
    """Lifetime counters of one model (``neurons`` for today is derived from the day's book)."""

    requests: int = 0
    items: int = 0
    neurons_total: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    audio_seconds: float = 0.0
    tiles: int = 0  # text-to-image: 512×512 tiles of the images made
    steps: int = 0  # text-to-image: diffusion steps


class Ledger:
    """All mutable accounting; one per app, touched only from the event loop."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        self.reset()

    def reset(self) -> None:
        """Forget everything, including days advanced."""
        self.day_offset = 0
        self.by_day: dict[str, dict[str, float]] = {}
        self.models: dict[str, ModelTotals] = {}
        self.windows: dict[str, deque[float]] = {}
        self.requests_total = 0
        self.status_counts: Counter[str] = Counter()
        self.error_codes: Counter[str] = Counter()

    # -- the day -----------------------------------------------------------------------

    def day(self) -> str:
        """Today's emulated UTC date, ``YYYY-MM-DD``."""
        today = self._clock.now().date() + timedelta(days=self.day_offset)
        return today.isoformat()

    def advance_day(self) -> str:
        """Move to the next emulated day; its usage starts at zero."""
        self.day_offset += 1
        return self.day()

    def neurons_today(self) -> float:
        """Neurons billed on the emulated day so far."""
        return sum(self.by_day.get(self.day(), {}).values())

    # -- limits ------------------------------------------------------------------------

    def take_slot(self, model_id: str, limit: int) -> int | None:
        """Record a request in ``model_id``'s window, or return seconds until a slot frees."""
        now = self._clock.monotonic()
        window = self.windows.setdefault(model_id, deque())
        while window and window[0] <= now - WINDOW_S:
            window.popleft()
        if len(window) >= limit:
            return max(1, math.ceil(window[0] + WINDOW_S - now))
        window.append(now)
        return None

    # -- counters ----------------------------------------------------------------------

    def count(self, status: int | str, code: int | None = None) -> None:
        """Count one answered (or dropped) inference request."""
        self.requests_total += 1
        self.status_counts[str(status)] += 1
        if code is not None:
            self.error_codes[str(code)] += 1

    def bill(self, model_id: str, usage: Usage, items: int, neurons: float) -> None:
        """Book a served request (or a completed Batch API item)."""
        book = self.by_day.setdefault(self.day(), {})
        book[model_id] = book.get(model_id, 0.0) + neurons
        totals = self.models.setdefault(model_id, ModelTotals())
        totals.requests += 1
        totals.items += items
        totals.neurons_total += neurons
        totals.input_tokens += usage.input_tokens
        totals.output_tokens += usage.output_tokens
        totals.audio_seconds += usage.audio_seconds
        totals.tiles += usage.tiles
        totals.steps += usage.steps

    def stats(self, daily_neurons: float) -> dict[str, Any]:
        """The JSON of ``GET /__emulator/stats``."""
        today = self.day()
        book = self.by_day.get(today, {})
        models = {}
        for model_id, totals in self.models.items():
            entry = asdict(totals)
            entry["neurons"] = book.get(model_id, 0.0)
            models[model_id] = entry
        history = {day: sum(b.values()) for day, b in sorted(self.by_day.items())}
        history.setdefault(today, 0.0)
        return {
            "day": today,
            "daily_neurons": daily_neurons,
            "neurons_today": sum(book.values()),
            "requests_total": self.requests_total,
            "status_counts": dict(self.status_counts),
            "error_codes": dict(self.error_codes),
            "models": models,
            "history": history,
        }
