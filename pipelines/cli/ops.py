"""``pipelines status`` and ``pipelines schedule``: running jobs night after night."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pipelines.core.errors import JobError
from pipelines.job.load import load_jobs

if TYPE_CHECKING:
    from pipelines.job.spec import Job
    from pipelines.ops.schedule import ScheduleSpec


def _job_paths(paths: tuple[Path, ...]) -> list[Path]:
    if paths:
        return list(paths)
    if Path("jobs").is_dir():
        return [Path("jobs")]
    raise JobError("name job files or folders, e.g. `pipelines status jobs/`")


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def status(paths: tuple[Path, ...], as_json: bool) -> None:
    """Rows done, pending and failed, the last run and neurons, per job (no network).

    PATHS are job files or folders of them (default: ./jobs).
    """
    from pipelines.budget import utc_today
    from pipelines.ops.status import collect_status, render_table

    statuses = collect_status(load_jobs(_job_paths(paths)))
    if as_json:
        payload = {"day": utc_today(), "jobs": [s.as_dict() for s in statuses]}
        click.echo(json.dumps(payload, indent=2))
        return
    click.echo(render_table(statuses))


def write_html_report(
    jobs: list[Job], out: Path, *, account: str | None = None, days: int = 30
) -> Path:
    """Gather and write the HTML report of ``jobs`` (also what ``run --report`` calls)."""
    from datetime import UTC, datetime

    from pipelines.ops.manifest import iso_utc
    from pipelines.ops.report_data import collect_report
    from pipelines.ops.report_html import write_report

    data = collect_report(jobs, generated_at=iso_utc(datetime.now(UTC)), account=account, days=days)
    return write_report(data, out)


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("report.html"),
    show_default=True,
    help="The HTML file to write (replaced atomically).",
)
@click.option(
    "--account",
    default=None,
    help="Ledger account for the days and the cap (default: $CLOUDFLARE_ACCOUNT_ID).",
)
@click.option("--days", type=click.IntRange(1, 366), default=30, show_default=True)
def report(paths: tuple[Path, ...], out: Path, account: str | None, days: int) -> None:
    """Write one self-contained HTML report: rows, runs, neurons per day, failures.

    PATHS are job files or folders of them (default: ./jobs). The page inlines its charts'
    runtime, so it works offline and can be mailed.
    """
    written = write_html_report(load_jobs(_job_paths(paths)), out, account=account, days=days)
    click.echo(f"wrote {written}")


@click.group()
def schedule() -> None:
    """Run jobs every night from cron or a systemd user timer (times in UTC)."""


def _token_note(kind: str) -> str | None:
    """What a scheduled run will lack: the token is never carried into a schedule."""
    if os.environ.get("CLOUDFLARE_API_TOKEN_FILE"):
        return None
    where = "the crontab" if kind == "cron" else "the unit files"
    if os.environ.get("CLOUDFLARE_ACCOUNT_ID"):
        # the account is carried and the token is not: `auto` refuses one without the other
        outcome = (
            "scheduled runs of `provider: auto` jobs will stop with an error (the account "
            "id is carried into the schedule, the token is not)"
        )
    else:
        outcome = "`provider: auto` jobs will use the local models"
    return (
        f"note: the API token is never written into {where}, so scheduled runs only get it "
        "from a file: put it in one only you can read and set CLOUDFLARE_API_TOKEN_FILE "
        f"before installing; without it, {outcome}"
    )


@schedule.command("install")
@click.argument("jobs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--at", "at", required=True, help="Time of day in UTC, 24-hour HH:MM.")
@click.option("--cron", "kind", flag_value="cron", default=True, help="A user crontab entry.")
@click.option("--systemd", "kind", flag_value="systemd", help="A systemd user timer.")
@click.option("--print", "print_only", is_flag=True, help="Only print what would be installed.")
@click.option(
    "--log",
    type=click.Path(path_type=Path),
    default=None,
    help="Append the runs' output here (default: <state dir>/logs/pipelines.log).",
)
@click.option("--name", default="nightly", show_default=True, help="Names this schedule.")
def install(
    jobs: tuple[Path, ...], at: str, kind: str, print_only: bool, log: Path | None, name: str
) -> None:
    """Run JOBS (files or folders) every day at --at UTC."""
    from pipelines.ops import schedule as sched

    spec = sched.ScheduleSpec.make(jobs, at, name=name, log=log)
    load_jobs(spec.jobs)  # a broken job file fails now, not at night
    note = _token_note(kind)
    if note:  # the same warning whether it installs or only prints
        click.echo(note, err=True)
    if print_only:
        _print_schedule(spec, kind)
        return
    if kind == "cron":
        lines = sched.install_cron(spec)
        click.echo("added to your crontab:\n" + "\n".join(lines))
    else:
        _install_systemd(spec)
    click.echo(f"output goes to {spec.log}")


def _print_schedule(spec: ScheduleSpec, kind: str) -> None:
    from pipelines.ops import schedule as sched

    if kind == "cron":
        click.echo("\n".join(sched.cron_lines(spec)))
        return
    for file, text in sched.systemd_units(spec).items():
        click.echo(f"# --- {file}\n{text}")


def _install_systemd(spec: ScheduleSpec) -> None:
    from pipelines.ops import schedule as sched

    for path in sched.install_systemd(spec):
        click.echo(f"wrote {path}")
    timer = f"{sched.unit_stem(spec.name)}.timer"
    problem = sched.systemctl("daemon-reload") or sched.systemctl("enable", "--now", timer)
    if problem:
        click.echo(
            f"note: {problem}; enable it with: systemctl --user daemon-reload && "
            f"systemctl --user enable --now {timer}",
            err=True,
        )
    else:
        click.echo(f"enabled {timer}")


@schedule.command("show")
def show() -> None:
    """List the schedules pipelines installed (crontab and systemd user timers)."""
    from pipelines.ops import schedule as sched

    entries, notes = sched.list_schedules()
    for n in notes:
        click.echo(f"note: {n}", err=True)
    if not entries:
        click.echo("no pipelines schedules installed")
        return
    for e in entries:
        click.echo(f"{e.name} ({e.kind}, every day at {e.at_utc or '?'} UTC)")
        click.echo("  " + e.text.rstrip("\n").replace("\n", "\n  "))


@schedule.command("remove")
@click.argument("name", required=False)
def remove(name: str | None) -> None:
    """Remove schedule NAME, or every pipelines schedule; other cron lines are kept."""
    from pipelines.ops import schedule as sched

    if name is not None:
        sched.check_name(name)
    entries, notes = sched.list_schedules()
    for n in notes:
        click.echo(f"note: {n}", err=True)
    chosen = [e for e in entries if name is None or e.name == name]
    if not chosen:
        click.echo(f"no schedule named {name}" if name else "no pipelines schedules installed")
        return
    if any(e.kind == "cron" for e in chosen):
        for line in sched.remove_cron(name):
            click.echo(f"removed from crontab: {line}")
    for e in chosen:
        if e.kind == "systemd":
            sched.systemctl("disable", "--now", f"{sched.unit_stem(e.name)}.timer")
    for path in sched.remove_systemd(name):
        click.echo(f"removed {path}")
