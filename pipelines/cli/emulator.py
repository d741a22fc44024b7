"""``pipelines emulator``: serve the local Workers AI emulator in the foreground.

Imports of the server stack happen inside the command, so other commands stay quick and
this one is listening well within a few seconds.
"""

from __future__ import annotations

import sys

import click


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
def emulator(
    host: str,
    port: int,
    daily_neurons: float,
    rpm_scale: float,
    latency_ms: float,
    latency_jitter_ms: float,
    spike_rate: float,
    spike_ms: float,
    error_rate: float,
    capacity_rate: float,
    capacity_burst_every_s: float,
    capacity_burst_len_s: float,
    drop_rate: float,
    malformed_rate: float,
    seed: int,
    token: str | None,
    exhausted_code: str,
    strict_cap: bool,
    max_body_bytes: int,
    batch_delay_s: float,
) -> None:
    """Run the local Workers AI emulator (point CLOUDFLARE_API_BASE_URL at it)."""
    from pipelines.emulator import EmulatorConfig, serve

    try:
        config = EmulatorConfig(
            daily_neurons=daily_neurons,
            rpm_scale=rpm_scale,
            latency_ms=latency_ms,
            latency_jitter_ms=latency_jitter_ms,
            spike_rate=spike_rate,
            spike_ms=spike_ms,
            error_rate=error_rate,
            capacity_rate=capacity_rate,
            capacity_burst_every_s=capacity_burst_every_s,
            capacity_burst_len_s=capacity_burst_len_s,
            drop_rate=drop_rate,
            malformed_rate=malformed_rate,
            seed=seed,
            token=token,
            exhausted_code=int(exhausted_code),
            strict_cap=strict_cap,
            max_body_bytes=max_body_bytes,
            batch_delay_s=batch_delay_s,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None

    def ready(bound_host: str, bound_port: int) -> None:
        click.echo(f"listening on http://{bound_host}:{bound_port}")
        click.echo(f"  CLOUDFLARE_API_BASE_URL=http://{bound_host}:{bound_port}/client/v4")
        sys.stdout.flush()  # a parent process waits for this line

    try:
        serve(config, host=host, port=port, on_ready=ready)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after a clean shutdown
        click.echo("emulator stopped", err=True)
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
