"""``pipelines emulator``: serve the local Workers AI emulator in the foreground.

Imports of the server stack happen inside the command, so other commands stay quick and
this one is listening well within a few seconds.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from pipelines.core.errors import JobError


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8787, show_default=True, help="Port; 0 picks a free one.")
@click.option("--daily-neurons", default=10_000.0, show_default=True, help="Daily allocation.")
@click.option("--rpm-scale", default=1.0, show_default=True, help="Scales per-minute limits.")
@click.option("--latency-ms", default=0.0, show_default=True, help="Mean added latency.")
@click.option("--latency-jitter-ms", default=0.0, show_default=True, help="± uniform jitter.")
@click.option("--spike-rate", default=0.0, show_default=True, help="P(latency spike).")
@click.option("--spike-ms", default=0.0, show_default=True, help="Extra latency of a spike.")
@click.option("--error-rate", default=0.0, show_default=True, help="P(500/502/503).")
@click.option("--capacity-rate", default=0.0, show_default=True, help="P(429 / 3040).")
@click.option("--capacity-burst-every-s", default=0.0, show_default=True, help="Outage period.")
@click.option("--capacity-burst-len-s", default=0.0, show_default=True, help="Outage length.")
@click.option("--drop-rate", default=0.0, show_default=True, help="P(connection dropped).")
@click.option("--malformed-rate", default=0.0, show_default=True, help="P(truncated 200 body).")
@click.option("--seed", default=0, show_default=True, help="Seeds faults and outputs.")
@click.option("--token", default=None, help="Accept only this bearer token (default: any).")
@click.option(
    "--exhausted-code",
    type=click.Choice(["3036", "4006"]),
    default="3036",
    show_default=True,
    help="Code of the daily-cap 429.",
)
@click.option("--strict-cap", is_flag=True, help="Refuse requests that would cross the cap.")
@click.option("--max-body-bytes", default=10 * 1024 * 1024, show_default=True, help="413 above.")
@click.option("--batch-delay-s", default=0.2, show_default=True, help="Batch API turnaround.")
@click.option(
    "--batch-item-failure-rate",
    default=0.0,
    show_default=True,
    help="P(one item of a batch fails, code 3007; the others are served).",
)
@click.option(
    "--batch-reference",
    type=click.Choice(["echo", "null", "omit"]),
    default="echo",
    show_default=True,
    help="A batch response's external_reference: the item's, always null, or left out.",
)
@click.option(
    "--batch-nested-result",
    is_flag=True,
    help='Wrap each batch response\'s result in another {"result": ...}.',
)
@click.option(
    "--batch-in-order",
    "batch_shuffle",
    flag_value=False,
    default=True,
    help="Return batch responses in request order (default: shuffled).",
)
@click.option(
    "--error-result-shape",
    type=click.Choice(["null", "object"]),
    default="null",
    show_default=True,
    help='"result" of error answers: null, or {} as real 400s carry.',
)
@click.option(
    "--codeless-error-rate", default=0.0, show_default=True, help="P(error without a code)."
)
@click.option(
    "--graphql-string-type",
    type=click.Choice(["string", "String"]),
    default="string",
    show_default=True,
    help="String type of the analytics schema; the other spelling is a GraphQL error.",
)
@click.option(
    "--plan",
    type=click.Choice(["free", "paid"]),
    default="free",
    show_default=True,
    help="The account's plan: paid-only models answer 403 / 5035 on free.",
)
@click.option(
    "--json-failure-rate",
    default=0.0,
    show_default=True,
    help='P(JSON-mode request fails: "JSON Mode couldn\'t be met").',
)
@click.option(
    "--json-failure-mode",
    type=click.Choice(["http-400", "envelope-200"]),
    default="http-400",
    show_default=True,
    help="That failure as a 400, or as a 200 with success: false (both unverified).",
)
@click.option(
    "--json-response",
    type=click.Choice(["object", "string"]),
    default="object",
    show_default=True,
    help="A classic model's JSON-mode response: the parsed value or the JSON text.",
)
@click.option(
    "--corrupt-image-rate",
    default=0.0,
    show_default=True,
    help="P(an image model's answer is cut short: billed, does not decode).",
)
def emulator(host: str, port: int, exhausted_code: str, **knobs: Any) -> None:
    """Run the local Workers AI emulator (point CLOUDFLARE_API_BASE_URL at it)."""
    from pipelines.emulator import EmulatorConfig, serve

    if not 0 <= port <= 65535:
        raise JobError(f"--port must be between 0 and 65535 (0 picks a free one), got {port}")
    try:
        config = EmulatorConfig(exhausted_code=int(exhausted_code), **knobs)
    except ValueError as exc:
        raise JobError(f"invalid emulator setting: {exc}") from None

    def ready(bound_host: str, bound_port: int) -> None:
        click.echo(f"listening on http://{bound_host}:{bound_port}")
        click.echo(f"  CLOUDFLARE_API_BASE_URL=http://{bound_host}:{bound_port}/client/v4")
        sys.stdout.flush()  # a parent process waits for this line

    try:
        serve(config, host=host, port=port, on_ready=ready)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after a clean shutdown
        click.echo("emulator stopped", err=True)
    except (OSError, OverflowError) as exc:  # in use, not an address of this host, no such host
        detail = getattr(exc, "strerror", None) or str(exc)
        raise JobError(f"cannot listen on {host}:{port}: {detail}") from None
