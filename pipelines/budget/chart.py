"""Terminal rendering for ``pipelines budget``: eighth-block bars and short durations."""

from __future__ import annotations

from pipelines.budget.records import DayUsage, format_neurons

EIGHTHS = "▏▎▍▌▋▊▉█"


def bar(value: float, scale: float, width: int) -> str:
    """``value`` out of ``scale`` as up to ``width`` cells of eighth blocks."""
    if value <= 0 or scale <= 0 or width <= 0:
        return ""
    eighths = round(min(value / scale, 1.0) * width * 8)
    # Any use at all stays visible, however small next to the cap.
    eighths = max(eighths, 1)
    full, part = divmod(eighths, 8)
    return "█" * full + (EIGHTHS[part - 1] if part else "")


def duration(seconds: float) -> str:
    """``5h 12m`` / ``12m`` / ``40s``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def percent(used: float, cap: float) -> str:
    """Share of the cap, as people read it."""
    return f"{used / cap * 100:.0f}%" if cap > 0 else "-"


def history_lines(days: list[DayUsage], width: int = 30) -> list[str]:
    """One line per day: date, bar against the cap, neurons spent and share of the cap."""
    if not days:
        return []
    scale = max(max(d.cap for d in days), max(d.committed for d in days))
    figures = [format_neurons(d.committed) for d in days]
    caps = [format_neurons(d.cap) for d in days]
    fig_w = max(len(f) for f in figures)
    cap_w = max(len(c) for c in caps)
    lines = []
    for d, fig, cap in zip(days, figures, caps, strict=True):
        used = d.committed
        flag = "  exhausted" if d.exhausted else ""
        lines.append(
            f"{d.day}  {bar(used, scale, width):<{width}}  {fig:>{fig_w}} / {cap:>{cap_w}}"
            f"  {percent(used, d.cap):>4}{flag}"
        )
    return lines
