"""UTC days: Cloudflare resets every account's neuron allocation at 00:00 UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta


def utc_today() -> str:
    """Today's UTC date as ``YYYY-MM-DD``."""
    return datetime.now(UTC).date().isoformat()


def day_start(day: str) -> datetime:
    """00:00 UTC of ``day`` (``YYYY-MM-DD``)."""
    return datetime.combine(date.fromisoformat(day), time(0), tzinfo=UTC)


def reset_of(day: str) -> datetime:
    """When the allocation of ``day`` is replaced by the next one: 00:00 UTC the day after."""
    return day_start(day) + timedelta(days=1)


def shift_day(day: str, days: int) -> str:
    """``day`` moved by ``days`` (negative goes back)."""
    return (date.fromisoformat(day) + timedelta(days=days)).isoformat()


def _aware(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    # A naive time is taken as UTC rather than local time: every day boundary here is UTC.
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def next_reset(now: datetime | None = None) -> datetime:
    """The next 00:00 UTC strictly after ``now`` (default: now)."""
    current = _aware(now)
    return reset_of(current.date().isoformat())


def seconds_until_reset(now: datetime | None = None) -> float:
    """Seconds from ``now`` (default: now) to the next 00:00 UTC; always > 0."""
    current = _aware(now)
    return (next_reset(current) - current).total_seconds()
