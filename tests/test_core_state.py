"""The state folder and the databases in it, as the command line meets them (issue 11).

A damaged ledger stops everything with one ``error:`` line (it is the cap's safety, never
silently replaced); a damaged cache is only a warning (the cache is optional); a state
folder that cannot be used names ``PIPELINES_STATE_DIR`` and the path. Never a traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from pipelines.core.errors import StateError
from pipelines.core.state import ensure_state_dir, state_dir
from pipelines.emulator import EmulatorConfig, running_emulator
from pipelines.emulator.server import RunningEmulator

BGE = "@cf/baai/bge-small-en-v1.5"
GARBAGE = b"definitely not SQLite\n" * 100


@pytest.fixture(scope="module")
def emu() -> Iterator[RunningEmulator]:
    with running_emulator(EmulatorConfig(daily_neurons=1_000_000)) as emulator:
        yield emulator


@pytest.fixture
def cloud_env(emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", "acct-state")
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "state-token-value")
    monkeypatch.setenv("CLOUDFLARE_API_BASE_URL", emu.base_url)


def write_job(tmp: Path) -> Path:
    pl.DataFrame({"id": ["1", "2", "3"], "text": ["a river", "a garden", "a city"]}).write_csv(
        tmp / "in.csv"
    )
    job = tmp / "job.yaml"
    job.write_text(
        f"name: state\nsource: {{kind: csv, path: in.csv, key: id}}\n"
        f'task: {{kind: embed, model: "{BGE}", input: text}}\n'
        "output: {path: out/result.parquet}\n"
    )
    return job


def cli(*args: str) -> tuple[int, str, str]:
    """``python -m pipelines ARGS`` in its own process, with this test's environment."""
    done = subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return done.returncode, done.stdout, done.stderr


def one_error(code: int, err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert len(errors) == 1, err
    return errors[0]


def state() -> Path:
    return Path(os.environ["PIPELINES_STATE_DIR"])


# -- the ledger ----------------------------------------------------------------------------


def test_a_garbage_ledger_stops_the_run_with_one_error_and_stays_as_it_was(
    tmp_path: Path, cloud_env: None
) -> None:
    state().mkdir(parents=True)
    ledger = state() / "ledger.sqlite3"
    ledger.write_bytes(GARBAGE)
    code, _out, err = cli("run", "--no-progress", str(write_job(tmp_path)))
    line = one_error(code, err)
    assert str(ledger) in line and "not a SQLite database" in line
    assert ledger.read_bytes() == GARBAGE  # the cap's record is never silently replaced
    assert not (tmp_path / "out/result.parquet").exists()


def test_a_garbage_ledger_is_the_same_error_for_the_budget_command(tmp_path: Path) -> None:
    state().mkdir(parents=True)
    ledger = state() / "ledger.sqlite3"
    ledger.write_bytes(GARBAGE)
    code, _, err = cli("budget")
    assert str(ledger) in one_error(code, err)
    assert ledger.read_bytes() == GARBAGE


# -- the cache -----------------------------------------------------------------------------


def test_a_garbage_cache_is_a_warning_and_the_run_goes_on_without_it(
    tmp_path: Path, cloud_env: None
) -> None:
    state().mkdir(parents=True)
    cache = state() / "cache.sqlite3"
    cache.write_bytes(GARBAGE)
    code, _out, err = cli("run", "--no-progress", str(write_job(tmp_path)))
    assert code == 0, err
    assert not [line for line in err.splitlines() if line.startswith("error:")], err
    warning = [line for line in err.splitlines() if "cache" in line and str(cache) in line]
    assert len(warning) == 1 and "without" in warning[0], err
    assert pl.read_parquet(tmp_path / "out/result.parquet").height == 3
    assert cache.read_bytes() == GARBAGE


def test_an_unopenable_cache_is_a_warning_for_plan_too(tmp_path: Path, cloud_env: None) -> None:
    (state() / "cache.sqlite3").mkdir(parents=True)  # a folder where the file should be
    code, _out, err = cli("plan", str(write_job(tmp_path)))
    assert code == 0, err
    assert "cache" in err and "without" in err, err


def test_the_cache_command_itself_says_what_is_wrong(tmp_path: Path) -> None:
    state().mkdir(parents=True)
    (state() / "cache.sqlite3").write_bytes(GARBAGE)
    code, _, err = cli("cache", "stats")
    assert str(state() / "cache.sqlite3") in one_error(code, err)


# -- the state folder ----------------------------------------------------------------------


def _file_as_state(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("x")
    return path


def _uncreatable(tmp_path: Path) -> Path:
    return _file_as_state(tmp_path) / "state"


def _read_only(tmp_path: Path) -> Path:
    folder = tmp_path / "locked-state"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o500)
        return folder
    done = subprocess.run(
        [shutil.which("chattr") or "chattr", "+i", str(folder)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip("root, and chattr +i is refused here")
    return folder


def _unlock(folder: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True, check=False)
    elif folder.exists():
        folder.chmod(0o700)


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (_file_as_state, "not a folder"),
        (_uncreatable, "cannot be created"),
        (_read_only, "not writable"),
    ],
    ids=["is-a-file", "cannot-be-created", "read-only"],
)
@pytest.mark.parametrize("command", ["run", "budget", "cache-stats"])
def test_an_unusable_state_folder_is_one_error_naming_the_variable(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cloud_env: None,
    make: object,
    says: str,
    command: str,
) -> None:
    job = write_job(tmp_path)
    folder = make(tmp_path)  # type: ignore[operator]
    monkeypatch.setenv("PIPELINES_STATE_DIR", str(folder))
    args = {
        "run": ["run", "--no-progress", str(job)],
        "budget": ["budget"],
        "cache-stats": ["cache", "stats"],
    }[command]
    try:
        code, _, err = cli(*args)
    finally:
        _unlock(folder)
    line = one_error(code, err)
    assert f"PIPELINES_STATE_DIR={folder}" in line and says in line, line


def test_ensure_state_dir_creates_the_default_and_checks_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPELINES_STATE_DIR", str(tmp_path / "new" / "state"))
    assert ensure_state_dir() == tmp_path / "new" / "state" == state_dir()
    assert ensure_state_dir().is_dir() and list(state_dir().iterdir()) == []  # no probe left
    monkeypatch.delenv("PIPELINES_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(_file_as_state(tmp_path)))
    with pytest.raises(StateError) as info:
        ensure_state_dir()
    assert "set PIPELINES_STATE_DIR" in info.value.message  # unset: say how to choose one


def test_a_schedule_whose_log_cannot_live_in_the_state_folder_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = write_job(tmp_path)
    folder = _file_as_state(tmp_path)
    monkeypatch.setenv("PIPELINES_STATE_DIR", str(folder))
    monkeypatch.setenv("PIPELINES_SYSTEMD_DIR", str(tmp_path / "units"))
    code, _, err = cli("schedule", "install", "--systemd", "--at", "00:30", str(job))
    line = one_error(code, err)
    assert "PIPELINES_STATE_DIR" in line and str(folder / "logs") in line, line
    assert not list((tmp_path / "units").glob("*.service"))
