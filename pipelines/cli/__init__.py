"""The ``pipelines`` command line: a thin shell over the library.

Each command module owns one group of commands; this module only lists them and turns
:class:`~pipelines.core.errors.PipelinesError` into a one-line message and an exit code.

The commands are loaded lazily: :data:`COMMANDS` maps each name to the ``module:attribute``
that defines it and its one-line help, so ``--version`` and ``--help`` import no command
module (and so no web server, polars or httpx). tests/test_startup.py checks that the help
lines here are the commands' own.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, NamedTuple

import click

from pipelines.core.errors import PipelinesError
from pipelines.core.version import __version__


class LazyCommand(NamedTuple):
    """Where a command lives (``module:attribute``) and the first line of its docstring."""

    target: str
    help: str


COMMANDS: dict[str, LazyCommand] = {
    "budget": LazyCommand(
        "pipelines.cli.budget:budget",
        "Show today's neuron use, what is left and when the daily cap resets (00:00 UTC).",
    ),
    "cache": LazyCommand(
        "pipelines.cli.cache:cache",
        "The result cache: identical inputs are never paid for twice.",
    ),
    "emulator": LazyCommand(
        "pipelines.cli.emulator:emulator",
        "Run the local Workers AI emulator (point CLOUDFLARE_API_BASE_URL at it).",
    ),
    "models": LazyCommand(
        "pipelines.cli.models:models",
        "List the supported Workers AI models, their limits and prices in neurons.",
    ),
    "plan": LazyCommand(
        "pipelines.cli.run:plan",
        "Estimate rows, requests, neurons and days for a job (no network).",
    ),
    "report": LazyCommand(
        "pipelines.cli.ops:report",
        "Write one self-contained HTML report: rows, runs, neurons per day, failures.",
    ),
    "sheet": LazyCommand(
        "pipelines.cli.sheet:sheet",
        "Write an image job's contact sheet: its images as thumbnails, one HTML file.",
    ),
    "run": LazyCommand(
        "pipelines.cli.run:run",
        "Run jobs (files or folders of them, higher priority first) and write Parquet.",
    ),
    "schedule": LazyCommand(
        "pipelines.cli.ops:schedule",
        "Run jobs every night from cron or a systemd user timer (times in UTC).",
    ),
    "schema": LazyCommand(
        "pipelines.cli.validate:schema",
        "Print the job file's JSON Schema (for editor completion and checks).",
    ),
    "status": LazyCommand(
        "pipelines.cli.ops:status",
        "Rows done, pending and failed, the last run and neurons, per job (no network).",
    ),
    "vectorize": LazyCommand(
        "pipelines.cli.vectorize:vectorize",
        "Vectorize indexes: create one for a model, show one, search one by text.",
    ),
    "validate": LazyCommand(
        "pipelines.cli.validate:validate",
        "Check job files (or folders of them) and their input, without calling any model.",
    ),
}


def load_command(name: str) -> click.Command:
    """Import the module that defines command ``name`` and return the command."""
    module, _, attribute = COMMANDS[name].target.partition(":")
    command = getattr(importlib.import_module(module), attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{COMMANDS[name].target} is not a click command")
    return command


class _Group(click.Group):
    """Loads each command on first use; maps library errors to ``error: <message>`` and the
    error's exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.add_command(load_command(cmd_name), cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The listing is built from the table so that --help loads no command module; a
        # stand-in command shortens each line exactly as click would shorten the real one.
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [
            (name, click.Command(name, help=COMMANDS[name].help).get_short_help_str(limit))
            for name in names
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

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
