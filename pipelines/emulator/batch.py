"""The asynchronous Batch API (``?queueRequest=true``): queue, poll, and billing on completion.

Jobs complete lazily: when polled (or when stats are read) after ``batch_delay_s``, every
item runs through the same path as a synchronous request and is billed then. An item that
fails (bad input, daily cap reached by then) gets ``success: false`` with its error instead
of failing the whole batch, so one bad row does not sink the other rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipelines.catalog.metering import Usage
from pipelines.catalog.models import ModelInfo
from pipelines.emulator.clock import Clock, SystemClock
from pipelines.emulator.envelope import ApiError, bad_input

RunItem = Callable[[ModelInfo, dict[str, Any]], tuple[Any, Usage]]
"""Runs and bills one item; raises :class:`ApiError` when it fails."""


@dataclass
class BatchJob:
    """One queued ``requests`` array."""

    request_id: str
    model: ModelInfo
    items: list[Any]
    submitted: float
    responses: list[dict[str, Any]] | None = None
    usage: dict[str, int] = field(default_factory=dict)


class BatchQueue:
    """Jobs by request id."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        self.jobs: dict[str, BatchJob] = {}

    def clear(self) -> None:
        """Forget every job."""
        self.jobs.clear()

    def submit(self, model: ModelInfo, body: Any) -> dict[str, Any]:
        """Queue ``{"requests": [...]}``; returns the "queued" result."""
        if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
            raise bad_input("Error: required properties at '/' are 'requests'")
        if not body["requests"]:
            raise bad_input("Error: minItems at '/requests' not met (at least 1 items)")
        job = BatchJob(str(uuid.uuid4()), model, list(body["requests"]), self._clock.monotonic())
        self.jobs[job.request_id] = job
        return {"status": "queued", "request_id": job.request_id, "model": model.id}

    def poll(
        self, model: ModelInfo, request_id: Any, delay_s: float, run_item: RunItem
    ) -> dict[str, Any]:
        """The job's status, or its responses once done."""
        job = self.jobs.get(str(request_id))
        if job is None or job.model.id != model.id:
            raise bad_input(f"Error: no queued request {request_id!r} for {model.id}")
        elapsed = self._clock.monotonic() - job.submitted
        if job.responses is None and elapsed < delay_s:
            status = "queued" if elapsed < delay_s / 2 else "running"
            return {"status": status, "request_id": job.request_id}
        self._complete(job, run_item)
        return {"responses": job.responses, "usage": job.usage}

    def settle(self, delay_s: float, run_item: RunItem) -> None:
        """Complete (and so bill) every job whose time has come."""
        now = self._clock.monotonic()
        for job in self.jobs.values():
            if job.responses is None and now - job.submitted >= delay_s:
                self._complete(job, run_item)

    def _complete(self, job: BatchJob, run_item: RunItem) -> None:
        if job.responses is not None:
            return
        responses: list[dict[str, Any]] = []
        total = Usage()
        for i, item in enumerate(job.items):
            entry: dict[str, Any] = {"id": i}
            payload = item
            if isinstance(item, dict) and "external_reference" in item:
                entry["external_reference"] = item["external_reference"]
                payload = {k: v for k, v in item.items() if k != "external_reference"}
            try:
                if not isinstance(payload, dict):
                    raise bad_input("Error: type at '/' not met (must be object)")
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
