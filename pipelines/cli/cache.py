"""``pipelines cache stats`` and ``pipelines cache prune``.

The cache is imported inside the commands: it loads polars and pyarrow, which ``--help``
does not need.
"""

from __future__ import annotations

import json

import click


@click.group()
def cache() -> None:
    """The result cache: identical inputs are never paid for twice."""


@cache.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def stats(as_json: bool) -> None:
    """Entries, size and hits, per model."""
    from pipelines.run.cache import ResultCache

    with ResultCache() as store:
        data = store.stats()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"cache     {data['path']}")
    click.echo(
        f"entries   {data['entries']:,} ({data['bytes'] / 1e6:,.1f} MB), hits {data['hits']:,}"
    )
    for model, entry in sorted(data["models"].items()):
        click.echo(
            f"  {model:40} {entry['entries']:>10,} entries {entry['bytes'] / 1e6:>9,.1f} MB "
            f"{entry['hits']:>8,} hits"
        )


@cache.command()
@click.option("--older-than-days", type=click.FloatRange(min=0), default=None)
@click.option("--max-mb", type=click.FloatRange(min=0), default=None, help="Keep at most this.")
def prune(older_than_days: float | None, max_mb: float | None) -> None:
    """Drop entries unused for a while, or the least recently used beyond a size."""
    from pipelines.run.cache import ResultCache

    if older_than_days is None and max_mb is None:
        raise click.UsageError("say what to prune: --older-than-days N and/or --max-mb N")
    max_bytes = int(max_mb * 1e6) if max_mb is not None else None
    with ResultCache() as store:
        removed = store.prune(older_than_days=older_than_days, max_bytes=max_bytes)
    click.echo(f"removed {removed:,} entries")
