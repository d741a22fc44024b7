"""``pipelines run`` and ``pipelines plan``.

The runner, the planner and the launcher are imported inside the commands: they load httpx
and polars, which ``--help`` does not need.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from pipelines.core.errors import JobError
from pipelines.core.shard import Shard
from pipelines.job.load import load_job, load_jobs
from pipelines.job.spec import Job
from pipelines.run.report import RunReport, StopReason, plural
from pipelines.run.settings import RunSettings

if TYPE_CHECKING:
    from pipelines.run.plan import Plan

# `auto` is the job file's default, not something to force from the command line
PROVIDERS = ["cloudflare", "emulator", "local", "openai"]
MODES = ["sync", "batch"]
MODE_HELP = (
    "Override limits.mode: sync (one request at a time) or batch (Cloudflare's Batch API: "
    "payloads queued and collected later)."
)


def _summary(report: RunReport) -> str:
    parts = [
        f"{report.job}: {report.stop_reason.words}",
        f"rows done {report.rows_done:,}"
        + (f" ({report.rows_cached:,} from cache)" if report.rows_cached else ""),
        f"failed {report.rows_failed:,}",
        f"skipped {report.rows_skipped:,}",
        *([f"duplicates {report.rows_duplicate:,}"] if report.rows_duplicate else []),
        *([f"cut off at max_tokens {report.rows_truncated:,}"] if report.rows_truncated else []),
        *([f"answers asked again {report.answers_retried:,}"] if report.answers_retried else []),
        *([f"images made again {report.rows_repaired:,}"] if report.rows_repaired else []),
        *([f"batches submitted {report.batches_submitted:,}"] if report.batches_submitted else []),
        *([f"collected {report.batches_collected:,}"] if report.batches_collected else []),
        *([f"in flight {report.batches_in_flight:,}"] if report.batches_in_flight else []),
        f"requests {report.requests:,}",
        f"neurons {report.neurons:,.1f}",
        f"wall {report.wall_s:.1f}s",
    ]
    return ", ".join(parts)


@click.command()
@click.argument("jobs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--provider",
    type=click.Choice(PROVIDERS),
    default=None,
    help="Override the job's provider (default: auto).",
)
@click.option(
    "--base-url", default=None, help="API base URL (AI Gateway, an emulator, an OpenAI server)."
)
@click.option("--max-neurons", type=click.IntRange(min=1), default=None, help="Cap for this run.")
@click.option("--fresh", is_flag=True, help="Discard existing output and start over.")
@click.option("--retry-failed", is_flag=True, help="Send rows that failed permanently again.")
@click.option(
    "--repair", is_flag=True, help="Image jobs: make the images whose files are missing again."
)
@click.option("--wait", is_flag=True, help="At the daily cap, sleep until 00:00 UTC and go on.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--no-cache", is_flag=True, help="Do not answer rows from the result cache.")
@click.option("--mode", type=click.Choice(MODES), default=None, help=MODE_HELP)
@click.option(
    "--shard",
    "shard_spec",
    default=None,
    metavar="I/N",
    help="Only shard I of N (by key hash), into <output>/part-I-of-N.parquet.",
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    default=None,
    metavar="[ADDRESS]",
    help="Run the shards as Ray tasks: on the cluster at ADDRESS, or a local Ray.",
)
@click.option(
    "--shards",
    type=click.IntRange(min=1, max=4096),
    default=4,
    show_default=True,
    help="How many shards --ray runs.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    help="Log lines for people (text) or machines (json), on stderr.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="After the runs, refresh this HTML report of the jobs (see `pipelines report`).",
)
def run(
    jobs: tuple[Path, ...],
    provider: str | None,
    base_url: str | None,
    max_neurons: int | None,
    fresh: bool,
    retry_failed: bool,
    repair: bool,
    wait: bool,
    no_progress: bool,
    no_cache: bool,
    shard_spec: str | None,
    ray_address: str | None,
    shards: int,
    mode: str | None,
    log_format: str,
    report_path: Path | None,
) -> None:
    """Run jobs (files or folders of them, higher priority first) and write Parquet."""
    from pipelines.job.models import job_model
    from pipelines.job.modes import with_mode
    from pipelines.ops.jobset import arun_jobs, overall_exit_code
    from pipelines.ops.logs import configure_logging

    configure_logging("json" if log_format == "json" else "text")
    chosen = _mode(mode)
    if ray_address is not None and shard_spec is not None:
        raise JobError("--ray runs every shard itself: drop --shard")
    if ray_address is not None and Path(ray_address).is_file():
        raise JobError(f"--ray took {ray_address!r} as its address: put --ray after the jobs")
    # every job checked for the mode before any of them runs
    moded = [with_mode(j, job_model(j), chosen, provider) for j in load_jobs(jobs)]
    loaded = _sharded(moded, shard_spec)
    settings = RunSettings(
        provider=provider,
        base_url=base_url,
        fresh=fresh,
        retry_failed=retry_failed,
        repair=repair,
        max_neurons=max_neurons,
        wait=wait,
        progress=not no_progress and sys.stderr.isatty(),
        use_cache=not no_cache,
        mode=chosen,
    )
    try:
        if ray_address is not None:
            from pipelines.ops.ray_engine import run_on_ray

            quiet = replace(settings, progress=False)
            reports = run_on_ray(loaded, quiet, address=ray_address, shards=shards)
        else:
            reports = asyncio.run(arun_jobs(loaded, settings, raise_errors=len(loaded) == 1))
    except KeyboardInterrupt:
        # Ctrl-C between two runs (a run and the --wait sleep answer it themselves): what
        # was done is kept; never click's "Aborted!" and exit 1
        click.echo("note: interrupted; re-run to resume", err=True)
        sys.exit(130)
    for report in reports:
        click.echo(_summary(report))
        if report.message:
            kind = "error" if report.stop_reason is StopReason.ABORTED else "note"
            click.echo(f"{kind}: {report.message}", err=True)
    if report_path is not None:
        _refresh_report(loaded, report_path)
    sys.exit(overall_exit_code(reports))


def _plan_images(p: Plan) -> None:
    """The image lines of ``plan``: the price of one image and how many fit in a day."""
    each = p.neurons_per_image or 0.0
    priced = (
        f"{p.tiles_per_image} tiles of 512x512 + {p.steps_per_image} steps = "
        f"{each:,.1f} {p.unit} an image"
        if each
        else f"0 {p.unit} an image (no published price: beta, recorded at 0)"
    )
    click.echo(f"images     {p.requests:,} to make; {priced}")
    click.echo(
        f"{p.unit:<10} {p.neurons:,.1f} (today's remaining budget: {p.available_today:,.1f})"
    )
    limit = f"at {p.daily_neurons:,} {p.unit} a day" if each else "at the model's requests a minute"
    click.echo(f"per day    {p.images_per_day or 0:,} images {limit}")
    click.echo(f"days       {p.days_at_cap:,.2f} at {p.daily_neurons:,} {p.unit} a day")


def _refresh_report(jobs: list[Job], path: Path) -> None:
    """The nightly report after the runs; a failure to write it never hides their exit code."""
    from pipelines.cli.ops import write_html_report
    from pipelines.core.errors import PipelinesError

    try:
        click.echo(f"report: wrote {write_html_report(jobs, path)}")
    except PipelinesError as exc:
        click.echo(f"error: report not written: {exc.message}", err=True)


def _sharded(jobs: list[Job], spec: str | None) -> list[Job]:
    if spec is None:
        return jobs
    shard = Shard.parse(spec)
    return [job.sharded(shard) for job in jobs]


def _echo_batches(p: Plan, most: int) -> None:
    """plan's lines about batch mode: rows in flight, then requests and payloads."""
    if p.rows_in_flight:
        click.echo(
            f"           {p.rows_in_flight:,} in {p.batches_in_flight:,} Batch API payloads "
            "in flight (the next run collects them)"
        )
    click.echo(f"requests   {p.requests:,}")
    if p.mode == "batch":
        click.echo(f"batch      {p.payloads:,} payloads of at most {most:,} requests")


def _mode(mode: str | None) -> Literal["sync", "batch"] | None:
    return "batch" if mode == "batch" else "sync" if mode == "sync" else None


@click.command()
@click.argument("job_file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--retry-failed", is_flag=True, help="Count permanently failed rows as pending.")
@click.option("--repair", is_flag=True, help="Image jobs: count images whose file is missing.")
@click.option("--max-neurons", type=click.IntRange(min=1), default=None)
@click.option("--provider", type=click.Choice(PROVIDERS), default=None)
@click.option("--base-url", default=None, help="As for run (decides whose cached results count).")
@click.option("--shard", "shard_spec", default=None, metavar="I/N", help="Plan shard I of N.")
@click.option("--mode", type=click.Choice(MODES), default=None, help=MODE_HELP)
def plan(
    job_file: Path,
    as_json: bool,
    retry_failed: bool,
    repair: bool,
    max_neurons: int | None,
    provider: str | None,
    base_url: str | None,
    shard_spec: str | None,
    mode: str | None,
) -> None:
    """Estimate rows, requests, neurons and days for a job (no network)."""
    from pipelines.job.models import job_model
    from pipelines.job.modes import with_mode
    from pipelines.providers.registry import choose, expected_account, expected_label
    from pipelines.run.plan import plan_job

    model = job_model(job := load_job(job_file))
    (job,) = _sharded([with_mode(job, model, _mode(mode), provider)], shard_spec)
    settings = RunSettings(
        provider=provider,
        base_url=base_url,
        retry_failed=retry_failed,
        repair=repair,
        max_neurons=max_neurons,
    )
    choice = choose(job.provider, provider, base_url or job.base_url, model)
    p = plan_job(
        job,
        settings,
        produced_by=expected_label(choice, model),
        account=expected_account(choice, model),
    )
    if as_json:
        click.echo(json.dumps(p.as_dict(), indent=2))
        return
    click.echo(f"job        {p.job} ({p.model})")
    click.echo(
        f"rows       {p.rows_total:,} total, {p.rows_done:,} done, {p.rows_pending:,} pending"
        f" ({p.rows_new:,} new, {p.rows_changed:,} changed"
        + (f"; {p.rows_unsendable:,} will fail before sending" if p.rows_unsendable else "")
        + ")"
    )
    if p.rows_removed:
        fate = (
            "dropped by the run (output.sync)"
            if job.output.sync
            else "kept (output.sync drops them)"
        )
        click.echo(
            f"           {p.rows_removed:,} removed from the input: their output rows are {fate}"
        )
    if p.rows_duplicate:
        repeats = f"{p.rows_duplicate:,} duplicates"
        click.echo(f"           {repeats}: rows whose key came earlier (not processed)")
    if p.rows_missing:
        fate = "made again: --repair" if repair else "kept as they are; --repair makes them"
        click.echo(f"           {plural(p.rows_missing, 'image')} missing from the folder ({fate})")
    _echo_batches(p, job.limits.batch_items)
    if p.neurons_per_image is not None:
        _plan_images(p)
        return
    if p.rows_cached:
        click.echo(
            f"cache      {p.rows_cached:,} rows answered from the cache, "
            f"saving {p.neurons_saved_by_cache:,.1f} {p.unit}"
        )
    usage = f"{p.input_tokens:,} input tokens"
    if p.output_tokens:
        usage += f" + ~{p.output_tokens:,} output tokens"
    if p.audio_minutes:
        usage = f"{p.audio_minutes:,.1f} audio minutes"
    click.echo(f"usage      {usage}")
    if p.output_varies:
        seen = (
            f"answers of {p.mean_output_tokens:,.0f} tokens as on the rows done"
            if p.mean_output_tokens is not None
            else "answers of max_tokens/2 until rows are done"
        )
        click.echo(
            f"{p.unit:<10} {p.neurons:,.1f} expected ({seen}); between {p.neurons_floor:,.1f} "
            f"(empty answers) and {p.neurons_ceiling:,.1f} (every answer max_tokens long)"
        )
        click.echo(f"           today's remaining budget: {p.available_today:,.1f}")
    else:
        click.echo(
            f"{p.unit:<10} {p.neurons:,.1f} (today's remaining budget: {p.available_today:,.1f})"
        )
    click.echo(f"days       {p.days_at_cap:,.2f} at {p.daily_neurons:,} {p.unit} a day")
