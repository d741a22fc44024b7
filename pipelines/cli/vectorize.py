"""``pipelines vectorize``: Cloudflare Vectorize indexes for embed jobs' vectors."""

from __future__ import annotations

import asyncio
import json

import click

METRICS = ["cosine", "euclidean", "dot-product"]


@click.group()
def vectorize() -> None:
    """Vectorize indexes: create one for a model, show one, search one by text."""


@vectorize.command("create")
@click.argument("name")
@click.option("--model", "model_id", required=True, help="The embedding model it holds.")
@click.option("--metric", type=click.Choice(METRICS), default="cosine", show_default=True)
@click.option("--base-url", default=None, help="API base URL (e.g. the emulator's).")
def create(name: str, model_id: str, metric: str, base_url: str | None) -> None:
    """Create index NAME with the dimensions of --model."""
    from pipelines.ops.vectorize import create_index

    info = asyncio.run(create_index(name, model_id, metric, base_url))
    config = info.get("config") or {}
    click.echo(
        f"created {name}: {config.get('dimensions')} dimensions, {config.get('metric')}, "
        f"for {model_id}"
    )


@vectorize.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--base-url", default=None, help="API base URL (e.g. the emulator's).")
def info(name: str, as_json: bool, base_url: str | None) -> None:
    """Show index NAME: its dimensions, metric and model."""
    from pipelines.ops.vectorize import index_info, model_of

    found = asyncio.run(index_info(name, base_url))
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    config = found.get("config") or {}
    click.echo(f"index       {found.get('name', name)}")
    click.echo(f"dimensions  {config.get('dimensions')}")
    click.echo(f"metric      {config.get('metric')}")
    click.echo(f"model       {model_of(found) or '?'}")
    if "vectorCount" in found:
        click.echo(f"vectors     {found['vectorCount']:,}")


@vectorize.command("query")
@click.argument("name")
@click.argument("text")
@click.option("--top-k", type=click.IntRange(1, 20), default=5, show_default=True)
@click.option(
    "--model", "model_id", default=None, help="Default: the model the index was made for."
)
@click.option("--namespace", default=None)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--base-url", default=None, help="API base URL (e.g. the emulator's).")
def query(
    name: str,
    text: str,
    top_k: int,
    model_id: str | None,
    namespace: str | None,
    as_json: bool,
    base_url: str | None,
) -> None:
    """Embed TEXT with the index's model and show the nearest vectors."""
    from pipelines.ops.vectorize import query_index

    model, matches = asyncio.run(
        query_index(
            name, text, top_k=top_k, model_id=model_id, namespace=namespace, base_url=base_url
        )
    )
    if as_json:
        click.echo(json.dumps({"model": model, "matches": matches}, indent=2))
        return
    for m in matches:
        meta = json.dumps(m.get("metadata") or {}, ensure_ascii=False)
        click.echo(f"{float(m.get('score', 0.0)):.4f}  {m.get('id')}  {meta}")
