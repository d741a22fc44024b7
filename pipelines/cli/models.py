"""``pipelines models``: the catalog as a table or JSON."""

from __future__ import annotations

import json

import click

from pipelines.catalog.models import ModelInfo, list_models


def _price(m: ModelInfo) -> str:
    if m.image is not None:
        if not m.image.priced:
            return "0 (beta, unpriced)"
        return f"{m.neurons_per_tile:g}/tile + {m.neurons_per_step:g}/step"
    if m.neurons_per_audio_minute:
        return f"{m.neurons_per_audio_minute:g}/audio min"
    if m.neurons_per_m_output:
        return f"{m.neurons_per_m_input:g}/M in + {m.neurons_per_m_output:g}/M out"
    return f"{m.neurons_per_m_input:g}/M in"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--schemas", is_flag=True, help="With --json: include the input/output schemas.")
def models(as_json: bool, schemas: bool) -> None:
    """List the supported Workers AI models, their limits and prices in neurons.

    MAX OUT is a text-generation model's default max_tokens; JSON MODE how it takes an
    output_schema (none: it cannot); PLAN whether Workers Free may use it. Image models are
    priced per 512x512 tile of the image and per diffusion step."""
    catalog = list_models()
    if as_json:
        click.echo(json.dumps([m.as_dict(schemas=schemas) for m in catalog], indent=2))
        return
    header = (
        "MODEL",
        "TASK",
        "BATCH",
        "MAX TOKENS",
        "DIMS",
        "NEURONS",
        "RPM",
        "BATCH API",
        "MAX OUT",
        "JSON MODE",
        "PLAN",
    )
    rows = [
        (
            m.id,
            m.task,
            str(m.max_items),
            str(m.max_input_tokens or "-"),
            str(m.dimensions or "-"),
            _price(m),
            str(m.rpm),
            "yes" if m.batch_api else "no",
            str(m.default_max_tokens or "-"),
            m.json_mode if m.task == "generate" else "-",
            "paid only" if m.paid_only else "free",
        )
        for m in catalog
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
