"""The asynchronous Batch API (``?queueRequest=true``): queue, poll, and billing on completion.

Jobs complete lazily: when polled (or when stats are read) after ``batch_delay_s``, every
item runs through the same path as a synchronous request and is billed then. An item that
fails (bad input, daily cap reached by then, or a failure the ``batch_item_failure_rate``
knob draws) gets ``success: false`` with its error instead of failing the whole batch, so
one bad row does not sink the other rows.

The answer follows the shapes Cloudflare publishes: responses ``{"id", "result", "success",
"external_reference"}`` (``id`` is the item's index in ``requests``), out of order unless
``batch_shuffle`` is off, plus the batch's ``usage``. ``external_reference`` may sit on an
item (echoed on its response) or, as the REST docs show for bge-m3, on the ``contexts`` of a
query (accepted and dropped; the response's reference is then ``null``). The knobs
``batch_reference`` and ``batch_nested_result`` give the other shapes the docs show.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipelines.catalog.metering import Usage
from pipelines.catalog.models import ModelInfo
from pipelines.emulator.clock import Clock, SystemClock
from pipelines.emulator.config import EmulatorConfig
from pipelines.emulator.envelope import ApiError, bad_input

RunItem = Callable[[ModelInfo, dict[str, Any]], tuple[Any, Usage]]
"""Runs and bills one item; raises :class:`ApiError` when it fails."""

REFERENCE = "external_reference"
ITEM_FAILURE = ApiError(408, 3007, "Inference timed out")


@dataclass
class BatchJob:
    """One queued ``requests`` array."""

    request_id: str
    model: ModelInfo
    items: list[Any]
    submitted: float
    seq: int = 0  # submission order (the responses' shuffle follows it, not the random id)
    responses: list[dict[str, Any]] | None = None
    usage: dict[str, int] = field(default_factory=dict)


class BatchQueue:
    """Jobs by request id."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        self.jobs: dict[str, BatchJob] = {}
        # item failures draw from a sequence of their own, started from the seed on the first
        # completion: the same items fail for a seed whatever the other knobs decide
        self._draws: random.Random | None = None
        self._submitted = 0

    def clear(self) -> None:
        """Forget every job (and start the random sequences over)."""
        self.jobs.clear()
        self._draws = None
        self._submitted = 0

    def submit(self, model: ModelInfo, body: Any) -> dict[str, Any]:
        """Queue ``{"requests": [...]}``; returns the "queued" result."""
        if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
            raise bad_input("Error: required properties at '/' are 'requests'")
        if not body["requests"]:
            raise bad_input("Error: minItems at '/requests' not met (at least 1 items)")
        job = BatchJob(str(uuid.uuid4()), model, list(body["requests"]), self._clock.monotonic())
        self._submitted += 1
        job.seq = self._submitted
        self.jobs[job.request_id] = job
        return {"status": "queued", "request_id": job.request_id, "model": model.id}

    def poll(
        self, model: ModelInfo, request_id: Any, config: EmulatorConfig, run_item: RunItem
    ) -> dict[str, Any]:
        """The job's status, or its responses once done."""
        job = self.jobs.get(str(request_id))
        if job is None or job.model.id != model.id:
            raise bad_input(f"Error: no queued request {request_id!r} for {model.id}")
        elapsed = self._clock.monotonic() - job.submitted
        delay_s = config.batch_delay_s
        if job.responses is None and elapsed < delay_s:
            status = "queued" if elapsed < delay_s / 2 else "running"
            return {"status": status, "request_id": job.request_id}
        self._complete(job, config, run_item)
        assert job.responses is not None
        return {"responses": _shaped(job, config), "usage": job.usage}

    def settle(self, config: EmulatorConfig, run_item: RunItem) -> None:
        """Complete (and so bill) every job whose time has come."""
        now = self._clock.monotonic()
        for job in self.jobs.values():
            if job.responses is None and now - job.submitted >= config.batch_delay_s:
                self._complete(job, config, run_item)

    def _complete(self, job: BatchJob, config: EmulatorConfig, run_item: RunItem) -> None:
        if job.responses is not None:
            return
        if self._draws is None:
            self._draws = random.Random(f"{config.seed}:batch-items")
        draws = self._draws
        responses: list[dict[str, Any]] = []
        total = Usage()
        for i, item in enumerate(job.items):
            entry: dict[str, Any] = {"id": i}
            reference, payload = _split_reference(item)
            entry[REFERENCE] = reference
            try:
                if not isinstance(payload, dict):
                    raise bad_input("Error: type at '/' not met (must be object)")
                if draws.random() < config.batch_item_failure_rate:
                    raise ITEM_FAILURE
                result, usage = run_item(job.model, payload)
            except ApiError as exc:
                entry.update(
                    result=None,
                    success=False,
                    errors=[{"code": exc.code, "message": exc.message}],
                )
            else:
                entry.update(result=result, success=True)
                total = total + usage
            responses.append(entry)
        job.responses = responses
        job.usage = {
            "prompt_tokens": total.input_tokens,
            "completion_tokens": total.output_tokens,
            "total_tokens": total.input_tokens + total.output_tokens,
        }


def _split_reference(item: Any) -> tuple[Any, Any]:
    """An item's own reference (``None`` without one) and the item as the model reads it:
    without its reference, nor those on a query's ``contexts``."""
    if not isinstance(item, dict):
        return None, item
    reference = item.get(REFERENCE)
    payload = {k: v for k, v in item.items() if k != REFERENCE}
    contexts = payload.get("contexts")
    if isinstance(contexts, list):
        payload["contexts"] = [
            {k: v for k, v in c.items() if k != REFERENCE} if isinstance(c, dict) else c
            for c in contexts
        ]
    return reference, payload


def _shaped(job: BatchJob, config: EmulatorConfig) -> list[dict[str, Any]]:
    """The responses in the shape the knobs ask for (see the module docstring)."""
    assert job.responses is not None
    out: list[dict[str, Any]] = []
    for entry in job.responses:
        shaped = dict(entry)
        if config.batch_reference == "null":
            shaped[REFERENCE] = None
        elif config.batch_reference == "omit":
            shaped.pop(REFERENCE, None)
        if config.batch_nested_result and shaped.get("result") is not None:
            shaped["result"] = {"result": shaped["result"]}
        out.append(shaped)
    if config.batch_shuffle:
        random.Random(f"{config.seed}:order:{job.seq}").shuffle(out)
    return out
