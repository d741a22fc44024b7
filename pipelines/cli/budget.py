"""``pipelines budget``: today's neurons, what is left, when it resets, and recent days."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import click

from pipelines.budget import chart, clock
from pipelines.budget.config import effective_budget, resolve_account
from pipelines.budget.ledger import Ledger
from pipelines.budget.records import DayUsage, format_neurons
from pipelines.core.errors import JobError


async def fetch_account_usage(day: str, account: str) -> dict[str, float]:
    """Neurons per model the account used on ``day`` (``YYYY-MM-DD``), from its analytics.

    Tests replace this function. The providers are imported here, not at the top, so that
    ``pipelines budget`` without ``--sync`` (and every other command) does not load the
    HTTP stack.
    """
    from pipelines.providers.base import ProviderSettings
    from pipelines.providers.cloudflare import CloudflareProvider

    settings = replace(ProviderSettings.from_env(), account_id=account)
    if not settings.token:
        raise JobError(
            "--sync needs CLOUDFLARE_API_TOKEN (or CLOUDFLARE_API_TOKEN_FILE) with the "
            "Account Analytics Read permission"
        )
    provider = CloudflareProvider(settings)
    try:
        usage = await provider.fetch_usage(day)
    finally:
        await provider.aclose()
    return {str(model): float(neurons) for model, neurons in dict(usage).items()}


def _table(rows: list[dict[str, Any]]) -> list[str]:
    header = ("JOB", "MODEL", "USED", "RESERVED", "REQUESTS")
    cells = [
        (
            r["job"],
            r["model"],
            format_neurons(r["committed"]),
            format_neurons(r["reserved"]),
            str(r["requests"]),
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(len(header))]
    out = []
    for c in [header, *cells]:
        left = [c[i].ljust(widths[i]) for i in range(2)]
        right = [c[i].rjust(widths[i]) for i in range(2, len(header))]
        out.append("  ".join(left + right).rstrip())
    return out


def _summary(
    usage: DayUsage, reserve: int, available: float, left_s: float, known: bool
) -> list[str]:
    used = usage.committed + usage.reserved
    kept = f" ({format_neurons(reserve)} kept in reserve)" if reserve else ""
    lines = [
        f"Neurons for account {usage.account} on {usage.day} (UTC)",
        f"  {chart.bar(used, usage.cap, 30):<30}  {chart.percent(used, usage.cap)} of the cap",
        f"  used       {format_neurons(usage.committed)}",
        f"  reserved   {format_neurons(usage.reserved)}",
        f"  remaining  {format_neurons(usage.remaining)} of {format_neurons(usage.cap)}{kept}",
        f"  available  {format_neurons(available)} for new requests",
        f"  resets     {usage.resets_at:%Y-%m-%d %H:%M} UTC, in {chart.duration(left_s)}",
    ]
    if usage.day > clock.utc_today():
        lines.append(
            f"  clock      behind: it reads {clock.utc_today()}, but this ledger already counted "
            f"on {usage.day}, which it keeps until the date catches up"
        )
    if not known:
        lines.append(
            "  unknown    this ledger was made today: what the account spent before is not in "
            "it; paid runs wait for `pipelines budget --sync` (or --assume-unused)"
        )
    if usage.marked:
        lines.append(f"  stopped    Cloudflare: {usage.note}")
    elif usage.exhausted:
        lines.append("  stopped    the cap is used up")
    return lines


@dataclass
class _Actions:
    """What the command changed in the ledger before showing it."""

    synced: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)
    lifted: bool = False


def _act(ledger: Ledger, account: str, *, sync: bool, clear: bool, assume_unused: bool) -> _Actions:
    done = _Actions()
    if sync:
        if account == "default":
            raise JobError(
                "--sync needs the account id: pass --account or set CLOUDFLARE_ACCOUNT_ID"
            )
        day = ledger.today().day
        done.synced = asyncio.run(fetch_account_usage(day, account))
        ledger.record_external(done.synced, day=day)
        usage = ledger.today()
        # Cloudflare's analytics show room: its 3036/4006 was not about today's use
        if usage.marked and sum(done.synced.values()) < usage.cap:
            clear = True
    if assume_unused:
        ledger.assume_unused()
        done.notes.append(
            "noted: nothing ran on this account today besides what this ledger recorded"
        )
    if clear:
        done.lifted = ledger.clear_exhausted()
        done.notes.append(
            "lifted Cloudflare's used-up mark for today"
            if done.lifted
            else "no mark of Cloudflare's to lift today"
        )
    return done


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--history", is_flag=True, help="Also show the last days as a bar chart.")
@click.option(
    "--days",
    type=click.IntRange(1, 366),
    default=None,
    help="Days of history (default 14; implies --history).",
)
@click.option(
    "--sync",
    is_flag=True,
    help="First read today's real usage from the account's analytics (needs a token with "
    "Account Analytics Read); lifts a 3036/4006 mark when the figures show room.",
)
@click.option(
    "--clear-exhausted",
    is_flag=True,
    help="Lift today's mark left by Cloudflare's 3036/4006 (the day is used up).",
)
@click.option(
    "--assume-unused",
    is_flag=True,
    help="Say that nothing ran on the account today outside this ledger (lets a new ledger "
    "start paid runs without --sync).",
)
@click.option(
    "--account",
    default=None,
    help="Cloudflare account id (default: $CLOUDFLARE_ACCOUNT_ID, else 'default').",
)
def budget(
    as_json: bool,
    history: bool,
    days: int | None,
    sync: bool,
    clear_exhausted: bool,
    assume_unused: bool,
    account: str | None,
) -> None:
    """Show today's neuron use, what is left and when the daily cap resets (00:00 UTC)."""
    account_id = resolve_account(account)
    settings = effective_budget(None, None)
    ledger = Ledger(
        account=account_id, daily_neurons=settings.daily_neurons, reserve=settings.reserve
    )
    try:
        done = _act(
            ledger, account_id, sync=sync, clear=clear_exhausted, assume_unused=assume_unused
        )
        usage = ledger.today()
        available = ledger.available()
        known = ledger.usage_known()
        rows = ledger.by_job_model(usage.day)
        past = ledger.history(days or 14) if history or days is not None else None
    finally:
        ledger.close()
    left_s = max(0.0, (usage.resets_at - datetime.now(UTC)).total_seconds())

    if as_json:
        out: dict[str, Any] = {
            **usage.as_dict(),
            "reserve": settings.reserve,
            "available": available,
            "usage_known": known,
            "seconds_until_reset": left_s,
            "by_job_model": rows,
        }
        if past is not None:
            out["history"] = [d.as_dict() for d in past]
        if done.synced is not None:
            out["synced"] = done.synced
        if clear_exhausted or sync:
            out["lifted"] = done.lifted
        click.echo(json.dumps(out, indent=2))
        return

    lines = [*done.notes, *_summary(usage, settings.reserve, available, left_s, known)]
    if done.synced is not None:
        total = format_neurons(sum(done.synced.values()))
        lines.append(f"  synced     {total} reported by the account's analytics")
    if rows:
        lines += ["", *_table(rows)]
    if past is not None:
        lines += ["", f"Last {len(past)} days (UTC)", *chart.history_lines(past)]
    for line in lines:
        click.echo(line)
