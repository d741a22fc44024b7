"""``pipelines validate`` (check job files and their inputs) and ``pipelines schema``."""

from __future__ import annotations

import json
import sys

import click

from pipelines.core.errors import JobError, SourceError
from pipelines.job.load import job_files, load_job
from pipelines.job.spec import Job


def _check_one(path: str) -> tuple[Job | None, str]:
    """The job (``None`` when invalid) and the line to print for it."""
    # here, not at the top: the sources load polars, which `schema` and --help do not need
    from pipelines.sources import open_source

    try:
        job = load_job(path)
    except JobError as exc:
        return None, exc.message
    try:
        rows = open_source(job).count()
    except SourceError as exc:
        return None, f"{path}: source: {exc.message}"
    shown = "? rows" if rows is None else f"{rows:,} row{'' if rows == 1 else 's'}"
    return job, f"ok   {path} ({job.name}: {shown}, {job.task.model})"


@click.command()
@click.argument("jobs", nargs=-1, required=True, type=click.Path())
def validate(jobs: tuple[str, ...]) -> None:
    """Check job files (or folders of them) and their input, without calling any model.

    Exits 2 when any job is invalid.
    """
    failed = False
    names: dict[str, str] = {}
    for raw in jobs:
        try:
            paths = [str(p) for p in job_files([raw])]
        except JobError as exc:
            click.echo(exc.message)
            failed = True
            continue
        for path in paths:
            job, line = _check_one(path)
            click.echo(line)
            if job is None:
                failed = True
                continue
            # Names key each job's state, so two files must not share one.
            if names.get(job.name, path) != path:
                click.echo(f"{path}: name: {job.name!r} is also the name of {names[job.name]}")
                failed = True
            names.setdefault(job.name, path)
    if failed:
        sys.exit(2)


@click.command()
def schema() -> None:
    """Print the job file's JSON Schema (for editor completion and checks)."""
    document = Job.model_json_schema()
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document.setdefault("title", "pipelines job file")
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))
