"""Fault injection: latency, 5xx errors, capacity refusals and bursts, drops, malformed bodies.

Every request draws the same fixed set of numbers from one ``random.Random(seed)``, whatever
the knobs say, so a run is reproducible for a seed and turning one knob up does not
reshuffle the others' decisions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from pipelines.emulator.config import EmulatorConfig
from pipelines.emulator.envelope import ErrorDetail

FaultKind = Literal["none", "drop", "error", "capacity", "malformed"]
_STATUSES = (500, 502, 503)


@dataclass(frozen=True)
class FaultPlan:
    """What happens to one request: a delay first, then maybe a fault."""

    delay_s: float
    kind: FaultKind
    status: int = 200


class Faults:
    """Draws a :class:`FaultPlan` per inference request."""

    def __init__(self, seed: int) -> None:
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Start the random sequences over (on reset)."""
        self.rng = random.Random(seed)
        # Error shapes draw from their own sequence: every answer is not an error, so
        # sharing one would make the fault decisions depend on which requests failed.
        self.shape_rng = random.Random(f"{seed}:error-shape")
        # JSON mode's failures draw per attempt (a model's sampling differs each time), so
        # asking again can succeed, as it can on Cloudflare; answers stay deterministic
        self.json_rng = random.Random(f"{seed}:json-failure")
        # a corrupt image, likewise per attempt: asking again gets a whole one
        self.image_rng = random.Random(f"{seed}:corrupt-image")

    def json_draw(self) -> float:
        """A number in [0, 1) for the next JSON-mode request's failure decision."""
        return self.json_rng.random()

    def image_draw(self) -> float:
        """A number in [0, 1) for the next image answer's corruption decision."""
        return self.image_rng.random()

    def error_detail(self, cfg: EmulatorConfig) -> ErrorDetail:
        """How the next error answer lists its error: with its code, or (with probability
        ``codeless_error_rate``) a message alone or an empty ``errors`` list, half each."""
        u_codeless, u_which = self.shape_rng.random(), self.shape_rng.random()
        if u_codeless >= cfg.codeless_error_rate:
            return "coded"
        return "message" if u_which < 0.5 else "empty"

    def plan(self, cfg: EmulatorConfig, elapsed_s: float) -> FaultPlan:
        """The plan for the next request; ``elapsed_s`` is time since the emulator started."""
        u_drop, u_err, u_cap, u_malf, u_spike, u_jit, u_status = (
            self.rng.random() for _ in range(7)
        )
        delay_ms = cfg.latency_ms + (2.0 * u_jit - 1.0) * cfg.latency_jitter_ms
        if u_spike < cfg.spike_rate:
            delay_ms += cfg.spike_ms
        delay_s = max(0.0, delay_ms) / 1000.0
        if u_drop < cfg.drop_rate:
            return FaultPlan(delay_s, "drop")
        if u_err < cfg.error_rate:
            return FaultPlan(delay_s, "error", _STATUSES[int(u_status * len(_STATUSES))])
        if u_cap < cfg.capacity_rate or in_burst(cfg, elapsed_s):
            return FaultPlan(delay_s, "capacity", 429)
        if u_malf < cfg.malformed_rate:
            return FaultPlan(delay_s, "malformed")
        return FaultPlan(delay_s, "none")


def in_burst(cfg: EmulatorConfig, elapsed_s: float) -> bool:
    """Whether a capacity outage is on: the first ``len`` seconds of every ``every`` seconds."""
    every, length = cfg.capacity_burst_every_s, cfg.capacity_burst_len_s
    if every <= 0 or length <= 0:
        return False
    return (elapsed_s % every) < length


def truncate(body: bytes) -> bytes:
    """A body cut short so that it no longer parses as JSON."""
    return body[: max(1, len(body) // 2)]
