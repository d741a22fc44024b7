"""``pipelines validate`` (check job files and their inputs) and ``pipelines schema``."""

from __future__ import annotations

import json
import sys

import click

from pipelines.core.errors import JobError, SourceError
from pipelines.job.load import inspect_job, job_files
from pipelines.job.problems import Loc
from pipelines.job.spec import Job

# The fields opening the input reads: it is checked when they are all sound.
_SOURCE_FIELDS: tuple[Loc, ...] = (
    ("source",),
    ("task", "kind"),
    ("task", "input"),
    ("task", "source_lang_column"),
    ("task", "target_lang_column"),
    ("output", "keep"),
)


def _check_one(path: str) -> tuple[Job | None, str]:
    """The job (``None`` when invalid) and the lines to print for it: every problem of the
    file, and of its input when the fields that read it are sound."""
    # here, not at the top: the sources load polars, which `schema` and --help do not need
    from pipelines.sources import open_source

    try:
        job, problems = inspect_job(path)
    except JobError as exc:
        return None, exc.message
    lines = [problems.render()] if problems.items else []
    rows: int | None = None
    if job is not None and problems.clean(*_SOURCE_FIELDS):
        try:
            rows = open_source(job).count()
        except SourceError as exc:
            lines.append(f"{path}: source: {exc.message}")
        except JobError as exc:  # a rule of the job the source enforces too
            lines.append(exc.message)
    if lines or job is None:
        return None, "\n".join(lines)
    shown = "? rows" if rows is None else f"{rows:,} row{'' if rows == 1 else 's'}"
    return job, f"ok   {path} ({job.name}: {shown}, {job.task.model})"


@click.command()
@click.argument("jobs", nargs=-1, required=True, type=click.Path())
def validate(jobs: tuple[str, ...]) -> None:
    """Check job files (or folders of them) and their input, without calling any model.

    Every problem of a file is listed at once. Exits 2 when any job is invalid.
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
