"""What the ledger hands out and reports, and how neuron figures are written for people."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


def format_neurons(value: float) -> str:
    """``9,987`` for big figures, up to two decimals for small ones."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    text = f"{value:,.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


@dataclass(frozen=True)
class Reservation:
    """Neurons promised to one request that has not been settled yet."""

    id: int
    account: str
    day: str
    job: str
    model: str
    neurons: float


@dataclass(frozen=True)
class DayUsage:
    """One account's UTC day. ``remaining`` ignores the reserve setting; never below 0."""

    account: str
    day: str
    cap: float
    committed: float
    reserved: float
    remaining: float
    exhausted: bool
    resets_at: datetime
    note: str = ""
    # Cloudflare itself said the day is used up (3036/4006): nothing is granted until reset
    marked: bool = False

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "account": self.account,
            "day": self.day,
            "cap": self.cap,
            "committed": self.committed,
            "reserved": self.reserved,
            "remaining": self.remaining,
            "exhausted": self.exhausted,
            "note": self.note,
            "marked": self.marked,
            "resets_at": self.resets_at.isoformat(),
        }
