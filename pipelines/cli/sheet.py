"""``pipelines sheet``: the contact sheet of an image job, one self-contained HTML file."""

from __future__ import annotations

from pathlib import Path

import click

from pipelines.core.errors import OutputError
from pipelines.job.load import load_job


@click.command()
@click.argument("job_file", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The HTML file to write (replaced whole).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="Thumbnails of at most this many rows of the index.",
)
@click.option(
    "--size",
    type=click.IntRange(min=32, max=1024),
    default=192,
    show_default=True,
    help="Longest side of a thumbnail, in pixels.",
)
def sheet(job_file: Path, out: Path, limit: int, size: int) -> None:
    """Write an image job's contact sheet: its images as thumbnails, one HTML file."""
    from pipelines.core.files import atomic_write
    from pipelines.output.contact_sheet import contact_sheet

    job = load_job(job_file)
    page, counts = contact_sheet(job, limit=limit, size=size)
    try:
        atomic_write(out, page)
    except OSError as exc:
        raise OutputError(f"cannot write {out} ({exc.strerror or exc})") from exc
    click.echo(
        f"{out}: {counts.shown:,} of {counts.rows:,} images, {counts.missing:,} missing, "
        f"{counts.failed:,} failed rows"
    )
