"""``pipelines emulator``: placeholder until the emulator lands (issue 2)."""

from __future__ import annotations

import click


@click.command()
def emulator() -> None:
    """Run the local Workers AI emulator (not yet available)."""
    raise click.ClickException("the emulator is not built yet")
