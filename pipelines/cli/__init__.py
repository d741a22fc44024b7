"""The ``pipelines`` command line: a thin shell over the library.

Each command module owns one group of commands; this module only assembles them and turns
:class:`~pipelines.core.errors.PipelinesError` into a one-line message and an exit code.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from pipelines.core.errors import PipelinesError
from pipelines.core.version import __version__


class _Group(click.Group):
    """Maps library errors to ``error: <message>`` and the error's exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PipelinesError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="pipelines")
def main() -> None:
    """Batch pipelines for Cloudflare Workers AI, within the daily neuron cap."""


def _register() -> None:
    from pipelines.cli import emulator, models, validate

    main.add_command(models.models)
    main.add_command(emulator.emulator)
    main.add_command(validate.validate)
    main.add_command(validate.schema)
    from pipelines.cli import cache
    from pipelines.cli import run as run_cmd

    main.add_command(cache.cache)

    main.add_command(run_cmd.run)
    main.add_command(run_cmd.plan)
    from pipelines.cli import budget

    main.add_command(budget.budget)
    from pipelines.cli import ops

    main.add_command(ops.status)
    main.add_command(ops.schedule)


_register()
