"""The emulator's knobs: limits, metering and fault injection, all in one mutable dataclass.

The running app reads the knobs on every request, so a test may change them on
``emu.config`` while the server runs (``emu.config.error_rate = 1.0``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

MB = 1024 * 1024


@dataclass
class EmulatorConfig:
    """Everything that shapes the emulator's answers. Defaults give a well-behaved service."""

    daily_neurons: float = 10_000
    """The account's free daily allocation; billable requests fail once it is used up."""
    rpm_scale: float = 1.0
    """Multiplies every model's catalog requests-per-minute limit (0.01 makes 3000 → 30)."""
    latency_ms: float = 0.0
    """Mean added latency per inference request."""
    latency_jitter_ms: float = 0.0
    """Latency varies uniformly within ±jitter around the mean (never below zero)."""
    spike_rate: float = 0.0
    """Probability that a request gets an extra ``spike_ms`` of latency."""
    spike_ms: float = 0.0
    error_rate: float = 0.0
    """Probability of a 500/502/503 answer with an error envelope."""
    capacity_rate: float = 0.0
    """Probability of 429 / 3040 "Capacity temporarily exceeded"."""
    capacity_burst_every_s: float = 0.0
    """Every this many seconds (0 = never) a capacity outage starts..."""
    capacity_burst_len_s: float = 0.0
    """...and lasts this long: every inference request inside it gets 429 / 3040."""
    drop_rate: float = 0.0
    """Probability that the connection is closed without any response."""
    malformed_rate: float = 0.0
    """Probability of a 200 whose body is truncated, non-parseable JSON."""
    seed: int = 0
    """Seeds every random decision and salts every deterministic output."""
    token: str | None = None
    """When set, the only bearer token accepted; otherwise any non-empty token is."""
    exhausted_code: int = 3036
    """Code of the daily-cap error: 3036 (documented) or 4006 (seen on some paths)."""
    strict_cap: bool = False
    """Refuse a request that would cross the daily cap, instead of serving it in full."""
    max_body_bytes: int = 10 * MB
    """Bodies above this get 413 / 3006."""
    batch_delay_s: float = 0.2
    """How long an async batch stays queued/running before its responses are ready."""
    batch_max_bytes: int = 10 * MB
    """The Batch API's documented total payload limit."""
    batch_item_failure_rate: float = 0.0
    """Probability that one item of a batch fails when the batch runs (``success: false``,
    code 3007, "Inference timed out"), while the batch's other items are served."""
    batch_reference: Literal["echo", "null", "omit"] = "echo"
    """A response's ``external_reference``: the item's own (``null`` without one), as the
    REST docs show; always ``null`` (as when the references sit on a query's contexts); or
    left out (as one guide shows)."""
    batch_nested_result: bool = False
    """Wrap each response's ``result`` in another ``{"result": ...}``, as one of
    Cloudflare's guides shows it."""
    batch_shuffle: bool = True
    """Return a finished batch's responses out of order (Cloudflare says they may be)."""
    error_result_shape: Literal["null", "object"] = "null"
    """``result`` of an error answer: ``null`` (as documented) or ``{}`` (as real 400s are)."""
    graphql_string_type: Literal["string", "String"] = "string"
    """The name of the analytics schema's string type: ``string``, as Cloudflare documents,
    or GraphQL's built-in ``String``. A query declaring its variables with the other one
    gets a GraphQL validation error (``errors``), as from a real GraphQL server."""
    codeless_error_rate: float = 0.0
    """Probability that an error answer carries no code: its ``errors`` list holds only a
    message, or (half of those times) is empty. The HTTP status still tells what failed."""
    plan: Literal["free", "paid"] = "free"
    """The account's Workers plan: on ``free``, paid-only models answer 403 / 5035."""
    json_failure_rate: float = 0.0
    """Probability (decided per request, from its content and seed) that a JSON-mode request
    fails with "JSON Mode couldn't be met", as Cloudflare documents it may."""
    json_failure_mode: Literal["http-400", "envelope-200"] = "http-400"
    """How that failure is answered: HTTP 400 with the error envelope, or HTTP 200 with
    ``success: false`` (both are seen in clients' fixtures; Cloudflare documents neither)."""
    corrupt_image_rate: float = 0.0
    """Probability that a text-to-image answer is served (and billed) with an image cut short:
    it announces PNG or JPEG but does not decode."""
    json_response: Literal["object", "string"] = "object"
    """``response`` of a classic model in JSON mode: the parsed value (as Cloudflare's JSON
    mode docs show) or the JSON text (as its published output schema and types declare)."""

    def __post_init__(self) -> None:
        if self.exhausted_code not in (3036, 4006):
            raise ValueError("exhausted_code must be 3036 or 4006")
        if self.error_result_shape not in ("null", "object"):
            raise ValueError("error_result_shape must be 'null' or 'object'")
        if self.graphql_string_type not in ("string", "String"):
            raise ValueError("graphql_string_type must be 'string' or 'String'")
        if self.plan not in ("free", "paid"):
            raise ValueError("plan must be 'free' or 'paid'")
        if self.json_failure_mode not in ("http-400", "envelope-200"):
            raise ValueError("json_failure_mode must be 'http-400' or 'envelope-200'")
        if self.json_response not in ("object", "string"):
            raise ValueError("json_response must be 'object' or 'string'")
        if self.batch_reference not in ("echo", "null", "omit"):
            raise ValueError("batch_reference must be 'echo', 'null' or 'omit'")
        if self.batch_delay_s < 0:
            raise ValueError(f"batch_delay_s must not be negative, got {self.batch_delay_s}")
        for name in (
            "error_rate",
            "capacity_rate",
            "drop_rate",
            "malformed_rate",
            "spike_rate",
            "codeless_error_rate",
            "json_failure_rate",
            "corrupt_image_rate",
            "batch_item_failure_rate",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")

    def as_dict(self) -> dict[str, Any]:
        """The knobs as JSON-ready values (the token is never shown)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["token"] = "***" if self.token else None
        return out
