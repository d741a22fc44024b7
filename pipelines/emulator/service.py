"""The emulated service without HTTP: auth, model lookup, limits, the daily cap and billing.

``app.py`` turns requests into calls on :class:`Emulator`; everything that decides an
answer lives here so that the order of checks reads in one place:
auth → size → model (and the plan it needs) → per-minute window → faults → input → daily cap
→ run → bill.
"""

from __future__ import annotations

from typing import Any

from pipelines.catalog.metering import Usage, neurons
from pipelines.catalog.models import ModelInfo, get_model, has_model
from pipelines.emulator import chat, images
from pipelines.emulator import envelope as env
from pipelines.emulator.batch import BatchQueue
from pipelines.emulator.clock import Clock, SystemClock
from pipelines.emulator.config import EmulatorConfig
from pipelines.emulator.faults import Faults
from pipelines.emulator.inputs import ModelInput, check_input
from pipelines.emulator.ledger import Ledger
from pipelines.emulator.outputs import Outcome, infer
from pipelines.emulator.vectorize import Store


class Emulator:
    """One emulated account: its knobs, clock, books, random faults and queued batches."""

    def __init__(self, config: EmulatorConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.ledger = Ledger(self.clock)
        self.faults = Faults(config.seed)
        self.batches = BatchQueue(self.clock)
        self.started = self.clock.monotonic()
        self.vectorize = Store()  # Vectorize v2 indexes, per account
        self.in_flight = 0
        """API requests being answered now (a client that gave up may leave some behind)."""

    # -- checks, in request order ----------------------------------------------------

    def authorize(self, header: str | None) -> None:
        """401 / 10000 unless a bearer token (the configured one, if any) is present."""
        scheme, _, token = (header or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise env.auth_error()
        if self.config.token is not None and token != self.config.token:
            raise env.auth_error()

    def check_size(self, size: int, limit: int | None = None) -> None:
        """413 / 3006 for bodies over the limit."""
        limit = self.config.max_body_bytes if limit is None else limit
        if size > limit:
            raise env.too_large(limit)

    def model(self, model_id: Any) -> ModelInfo:
        """The catalog entry, or 400 / 5007; 403 / 5035 for a paid-only model on the free
        plan (before any window slot is taken or anything is billed)."""
        if not isinstance(model_id, str) or not has_model(model_id):
            raise env.no_such_model(str(model_id))
        model = get_model(model_id)
        if model.paid_only and self.config.plan != "paid":
            raise env.paid_plan_required(model.id)
        return model

    def take_slot(self, model: ModelInfo) -> None:
        """429 / 3021 with Retry-After when the model's sliding minute is full."""
        limit = max(1, int(model.rpm * self.config.rpm_scale))
        wait = self.ledger.take_slot(model.id, limit)
        if wait is not None:
            raise env.rate_limited(wait)

    def check_not_exhausted(self) -> None:
        """429 / exhausted_code once today's billed neurons reached the allocation."""
        if self.ledger.neurons_today() >= self.config.daily_neurons:
            raise env.daily_exhausted(self.config.exhausted_code, self.config.daily_neurons)

    # -- running ---------------------------------------------------------------------

    def execute(
        self, model: ModelInfo, inp: ModelInput, *, bill: bool = True, openai: bool = False
    ) -> Outcome:
        """Run a validated input; bill it unless told not to (a malformed answer is not).
        ``openai``: a text model answers a ``chat.completion`` whatever its own shape."""
        self.check_not_exhausted()
        if model.task == "generate":
            created = int(self.clock.now().timestamp())
            draw = self.faults.json_draw()
            outcome = chat.infer(
                model, inp, self.config, created=created, openai=openai, json_draw=draw
            )
        elif model.task == "image":
            draw = self.faults.image_draw()
            outcome = images.infer(model, inp, self.config, corrupt_draw=draw)
        else:
            outcome = infer(model, inp, self.config.seed)
        cost = neurons(model, outcome.usage)
        if (
            self.config.strict_cap
            and self.ledger.neurons_today() + cost > self.config.daily_neurons
        ):
            raise env.daily_exhausted(self.config.exhausted_code, self.config.daily_neurons)
        if bill:
            self.ledger.bill(model.id, outcome.usage, outcome.items, cost)
        return outcome

    def run_item(self, model: ModelInfo, item: dict[str, Any]) -> tuple[Any, Usage]:
        """One Batch API item, validated and billed like a synchronous request."""
        outcome = self.execute(model, check_input(model, item))
        return outcome.result, outcome.usage

    def settle_batches(self) -> None:
        """Complete the batches whose delay has passed."""
        self.batches.settle(self.config, self.run_item)

    def error_body(self, exc: env.ApiError) -> dict[str, Any]:
        """The envelope of an error answer, shaped by ``error_result_shape`` and
        ``codeless_error_rate``."""
        result: Any = {} if self.config.error_result_shape == "object" else None
        detail = self.faults.error_detail(self.config)
        return env.failure(exc.code, exc.message, result=result, detail=detail)

    def elapsed(self) -> float:
        """Seconds since start (or the last reset); capacity bursts are timed from it."""
        return self.clock.monotonic() - self.started

    # -- control -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The JSON of ``GET /__emulator/stats``."""
        self.settle_batches()
        return {**self.ledger.stats(self.config.daily_neurons), "in_flight": self.in_flight}

    def reset(self) -> None:
        """Clear usage, counters, windows, batches and the random sequence."""
        self.ledger.reset()
        self.batches.clear()
        self.faults.reseed(self.config.seed)
        self.started = self.clock.monotonic()

    def advance_day(self) -> str:
        """Move to the next emulated UTC day (settling due batches on the old one first)."""
        self.settle_batches()
        return self.ledger.advance_day()
