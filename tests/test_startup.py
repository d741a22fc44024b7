"""Fast start (issue 12): ``pipelines --version``, ``--help`` and ``import pipelines`` load no
web server, dataframe library, HTTP client or model runtime; the command table's help lines
are the commands' own; errors still become one ``error:`` line with every command loaded
lazily.

The imports are read from ``python -X importtime`` traces of real subprocesses; the control
tests show that a trace does list a heavy module once something needs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pipelines.cli import COMMANDS, load_command, main
from pipelines.core.errors import JobError

ROOT = Path(__file__).resolve().parents[1]
HEAVY = {"starlette", "uvicorn", "polars", "pyarrow", "torch", "numpy", "httpx"}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # this checkout, not whichever copy an editable install points at
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def traced_imports(*args: str) -> tuple[set[str], str]:
    """The modules ``python -X importtime <args>`` imports, and its stdout."""
    done = _run("-X", "importtime", *args)
    modules = {
        line.rpartition("|")[2].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    modules.discard("imported package")  # the trace's header line
    return modules, done.stdout


# The importtime trace misses modules loaded by importlib.import_module (it times only the
# import statement), which is how the CLI loads its commands; so which command modules a
# command line loads is read from sys.modules after it ran.
LOADED = """
import sys
from pipelines.cli import main
try:
    main(sys.argv[1:], prog_name="pipelines")
except SystemExit:
    pass
print("LOADED", *sorted(m for m in sys.modules if m.startswith("pipelines.cli.")))
"""


def command_modules_loaded(*cli_args: str) -> set[str]:
    """The ``pipelines.cli.*`` modules that running ``pipelines <cli_args>`` imports."""
    out = _run("-c", LOADED, *cli_args).stdout
    return set(out.rpartition("LOADED")[2].split())


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in HEAVY}


def test_version_loads_nothing_heavy() -> None:
    modules, out = traced_imports("-m", "pipelines", "--version")
    assert "pipelines, version" in out
    assert "pipelines.cli" in modules  # the trace is read: our own modules are in it
    assert heavy(modules) == set()
    assert command_modules_loaded("--version") == set()


def test_help_lists_every_command_without_loading_any() -> None:
    modules, out = traced_imports("-m", "pipelines", "--help")
    section = out.split("Commands:", 1)[1].strip().splitlines()
    listed = {line.split()[0]: line.split(None, 1)[1] for line in section}
    assert sorted(listed) == sorted(COMMANDS)
    for name, line in listed.items():
        # each line is the start of the command's own help, maybe shortened
        assert COMMANDS[name].help.startswith(line.removesuffix("..."))
    assert heavy(modules) == set()
    assert command_modules_loaded("--help") == set()


def test_import_pipelines_loads_nothing_heavy() -> None:
    modules, _ = traced_imports("-c", "import pipelines")
    assert heavy(modules) == set()
    assert {m for m in modules if m.startswith("pipelines")} <= {
        "pipelines",
        "pipelines.core",
        "pipelines.core.version",
    }


def test_a_public_name_loads_its_module_on_first_use() -> None:
    # the control: the same trace does show the web server once the emulator is asked for
    modules, out = traced_imports("-c", "import pipelines; print(pipelines.running_emulator)")
    assert "running_emulator" in out
    assert {"starlette", "uvicorn"} <= heavy(modules)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_commands_help_loads_only_its_module(name: str) -> None:
    modules, out = traced_imports("-m", "pipelines", name, "--help")
    assert COMMANDS[name].help.split()[0] in out
    assert heavy(modules) == set()
    own = COMMANDS[name].target.partition(":")[0]
    assert command_modules_loaded(name, "--help") == {own}


def test_models_does_not_load_the_emulator_or_the_http_stack() -> None:
    modules, out = traced_imports("-m", "pipelines", "models", "--json")
    assert out.lstrip().startswith("[")
    assert heavy(modules) == set()
    assert not {m for m in modules if m.startswith("pipelines.emulator")}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_table_help_is_the_commands_own(name: str) -> None:
    command = load_command(name)
    assert command.name == name
    assert COMMANDS[name].help == (command.help or "").strip().splitlines()[0]


def test_help_reads_as_if_every_command_were_loaded() -> None:
    eager = click.Group(
        name=main.name,
        help=main.help,
        params=main.params,
        commands={name: load_command(name) for name in COMMANDS},
    )
    runner = CliRunner()
    lazy_help = runner.invoke(main, ["--help"], prog_name="pipelines")
    eager_help = runner.invoke(eager, ["--help"], prog_name="pipelines")
    assert lazy_help.exit_code == eager_help.exit_code == 0
    assert lazy_help.output == eager_help.output


def test_an_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["nonsense"])
    assert result.exit_code == 2
    assert "No such command 'nonsense'" in result.output


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["run", "--no-progress", "{missing}"], "{missing}"),
        (["plan", "{missing}"], "{missing}"),
        (["status", "{missing}"], "{missing}"),
        (["schedule", "install", "--at", "03:00", "{missing}"], "{missing}"),
        (["budget", "--sync"], "--sync needs the account id"),
    ],
    ids=["run", "plan", "status", "schedule-install", "budget-sync"],
)
def test_library_errors_from_lazy_commands_are_one_line(
    tmp_path: Path, args: list[str], said: str
) -> None:
    missing = str(tmp_path / "no-such-job.yaml")
    result = CliRunner().invoke(main, [a.replace("{missing}", missing) for a in args])
    assert result.exit_code == JobError.exit_code
    assert result.stderr.startswith("error: ")
    assert said.replace("{missing}", missing) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
