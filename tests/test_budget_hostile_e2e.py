"""Issue 11, the cap under hostile use, through the CLI against the emulator: a request the
client gave up on still counts, a request that can never fit stops ``--wait`` at once, a
ledger deleted mid-run never doubles the spend, a clock set back across midnight gives no
second allowance, and a ledger made immutable mid-run is one ``error:`` line (exit 2)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from pipelines.budget import Ledger
from pipelines.cli import main
from pipelines.emulator.server import RunningEmulator

SMALL = "@cf/baai/bge-small-en-v1.5"
M2M = "@cf/meta/m2m100-1.2b"


def cli(emu: RunningEmulator, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m pipelines ARGS`` with the Cloudflare variables pointing at ``emu``."""
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        env=emulator_env(emu),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def emulator_env(emu: RunningEmulator) -> dict[str, str]:
    return {
        **os.environ,
        "CLOUDFLARE_ACCOUNT_ID": "acct-hostile",
        "CLOUDFLARE_API_TOKEN": "t0ken-hostile",
        "CLOUDFLARE_API_BASE_URL": emu.base_url,
    }


def emulator_ledger(emu: RunningEmulator) -> Ledger:
    """The shared ledger as a run against ``emu`` sees it (its account and emulated day)."""
    origin = emu.base_url.split("/client/v4")[0].rstrip("/")
    return Ledger(account=f"emulator@{origin}", day_fn=emu.day)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def texts(path: Path, rows: int, words: int = 12) -> None:
    pl.DataFrame(
        {
            "id": [str(i) for i in range(rows)],
            "text": [" ".join(f"word{i}x{k}" for k in range(words)) for i in range(rows)],
        }
    ).write_csv(path)


# -- a request the client gave up on --------------------------------------------------------


@pytest.mark.emulator(latency_ms=3000, rpm_scale=100)
def test_a_request_the_client_timed_out_on_stays_counted(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    texts(tmp_path / "in.csv", 3)
    job = tmp_path / "job.yaml"
    job.write_text(
        f"""name: slow
source: {{kind: csv, path: in.csv, key: id}}
task: {{kind: embed, model: "{SMALL}", input: text}}
output: {{path: out.parquet}}
limits: {{timeout_s: 1, max_attempts: 2, batch_size: 1, concurrency: 3}}
"""
    )
    result = cli(emu, "run", "--no-progress", str(job))
    assert result.returncode == 1, result.stderr  # every row timed out: retryable failures
    emu.wait_idle(timeout_s=30)  # the server finishes (and bills) what the client gave up on
    billed = emu.stats()["neurons_today"]
    assert billed > 0
    with emulator_ledger(emu) as ledger:
        counted = ledger.today().committed
    assert counted >= billed - 1e-9, (counted, billed)


# -- a request that can never fit -------------------------------------------------------------


def translation_job(folder: Path, budget: str = "") -> Path:
    text = " ".join(["The quick brown fox jumps over the lazy dog."] * 40)  # ~90 neurons
    pl.DataFrame({"id": ["1"], "text": [text]}).write_csv(folder / "in.csv")
    job = folder / "job.yaml"
    job.write_text(
        f"""name: huge
source: {{kind: csv, path: in.csv, key: id}}
task:
  kind: translate
  model: "{M2M}"
  input: text
  params: {{source_lang: en, target_lang: fr}}
output: {{path: out.parquet}}
{budget}
"""
    )
    return job


@pytest.mark.emulator(rpm_scale=100)
def test_wait_stops_at_once_when_a_request_can_never_fit_a_day(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    job = translation_job(tmp_path, "budget: {daily_neurons: 20}")
    plan = cli(emu, "plan", "--json", str(job))
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["neurons"] > 20  # one request costs more than a day
    # a --wait that slept until midnight would outlive the timeout
    result = cli(emu, "run", "--wait", "--no-progress", str(job), timeout=90)
    assert result.returncode == 3, result.stderr
    assert "can never fit" in result.stderr
    assert "waiting" not in result.stderr and "resumes after 00:00 UTC" not in result.stderr
    assert emu.stats()["neurons_today"] == 0
    failed = pl.read_parquet(tmp_path / "out.failures.parquet")
    assert failed["error"].to_list() == ["CannotFit"]


@pytest.mark.emulator(rpm_scale=100)
def test_max_neurons_below_one_request_says_it_can_never_fit(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    job = translation_job(tmp_path)
    result = cli(emu, "run", "--wait", "--max-neurons", "10", "--no-progress", str(job))
    assert result.returncode == 3, result.stderr
    assert "can never fit" in result.stderr
    assert "re-run to continue" not in result.stderr
    assert "the next run goes on" not in result.stderr
    assert emu.stats()["neurons_today"] == 0


# -- the ledger deleted, or made immutable, mid-run ------------------------------------------


def embed_job(folder: Path, rows: int, budget: str = "") -> Path:
    texts(folder / "in.csv", rows)
    job = folder / "job.yaml"
    job.write_text(
        f"""name: corpus
source: {{kind: csv, path: in.csv, key: id}}
task: {{kind: embed, model: "{SMALL}", input: text}}
output: {{path: out.parquet}}
limits: {{batch_size: 5, concurrency: 2, requests_per_minute: 100000}}
{budget}
"""
    )
    return job


def ledger_files() -> list[Path]:
    state = Path(os.environ["PIPELINES_STATE_DIR"])
    return sorted(state.glob("ledger.sqlite3*"))


def start_mid_run(emu: RunningEmulator, job: Path) -> subprocess.Popen[str]:
    """``pipelines run JOB`` as a process, returned once some results are journaled."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "run", "--no-progress", str(job)],
        env=emulator_env(emu),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    journal = job.parent / ".out.parquet.pipelines"
    deadline = time.monotonic() + 60
    while not list(journal.glob("results-*.arrow")) or (
        emu.stats()["models"].get(SMALL, {}).get("items", 0) < 50
    ):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _out, err = proc.communicate()
            pytest.fail(f"the run ended before it was mid-way: {proc.returncode}\n{err}")
        time.sleep(0.02)
    return proc


def rows_kept(folder: Path) -> int:
    return pl.read_parquet(folder / "out.parquet").height


@pytest.mark.emulator(latency_ms=100, rpm_scale=100)
def test_a_ledger_deleted_mid_run_stops_the_run(tmp_path: Path, emu: RunningEmulator) -> None:
    job = embed_job(tmp_path, 1_000)
    proc = start_mid_run(emu, job)
    for file in ledger_files():
        file.unlink()
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    (line,) = error_lines(err)
    assert "deleted or replaced" in line and "budget --sync" in line
    assert "Traceback" not in err
    assert 0 < rows_kept(tmp_path) < 1_000  # what was done is kept


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    """Files put here are made immutable (``chattr +i``) and released after the test."""
    paths: list[Path] = []
    yield paths
    for path in paths:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True, check=False)


@pytest.mark.emulator(latency_ms=100, rpm_scale=100)
def test_a_ledger_made_immutable_mid_run_is_one_error_line(
    tmp_path: Path, emu: RunningEmulator, immutable: list[Path]
) -> None:
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("chattr is not available here: no way to make the ledger immutable")
    job = embed_job(tmp_path, 1_000)
    proc = start_mid_run(emu, job)
    os.sync()  # written back: the next write to a mapped page would fault (SIGBUS)
    for file in ledger_files():
        done = subprocess.run([chattr, "+i", str(file)], capture_output=True, text=True)
        if done.returncode != 0:
            proc.kill()
            proc.communicate()
            pytest.skip(f"chattr +i is refused here: {done.stderr.strip()}")
        immutable.append(file)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, (proc.returncode, err)  # not 135 / -7 (SIGBUS)
    (line,) = error_lines(err)
    assert "neuron ledger" in line and "read-only" in line
    assert "Traceback" not in err and "internal error" not in err
    assert 0 < rows_kept(tmp_path) < 1_000
    failures = tmp_path / "out.failures.parquet"
    assert not failures.exists() or pl.read_parquet(failures).height == 0


# -- paid runs: a new ledger does not know today; the day never goes back ----------------------


@pytest.fixture
def paid(emu: RunningEmulator, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The emulator passes for Cloudflare (it is not probed): runs are paid, on the account
    of ``CLOUDFLARE_ACCOUNT_ID`` and the real UTC day."""

    async def not_an_emulator(base_url: str) -> None:
        return None

    monkeypatch.setattr("pipelines.providers.emulator_day.probe_emulator", not_an_emulator)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.mark.emulator(rpm_scale=100)
@pytest.mark.usefixtures("paid")
def test_a_deleted_ledger_never_doubles_a_paid_days_spend(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    cap = 5
    job = str(embed_job(tmp_path, 300, f"budget: {{daily_neurons: {cap}}}"))
    code, out = invoke("run", "--no-progress", job)
    assert code == 2, out  # a new ledger: what did the account spend today?
    assert "budget --sync" in out and "--assume-unused" in out
    assert emu.stats()["neurons_today"] == 0
    assert invoke("budget", "--assume-unused")[0] == 0
    code, out = invoke("run", "--no-progress", job)
    assert code == 3, out
    first = emu.stats()["neurons_today"]
    assert 0 < first <= cap
    for file in ledger_files():  # the ledger is lost (deleted, a new disk, ...)
        file.unlink()
    code, out = invoke("run", "--no-progress", job)
    assert code == 2, out
    assert emu.stats()["neurons_today"] == first
    code, out = invoke("budget", "--sync")  # the account's analytics know the day
    assert code == 0, out
    code, out = invoke("run", "--no-progress", job)
    assert code == 3, out
    assert emu.stats()["neurons_today"] <= cap


@pytest.mark.emulator(rpm_scale=100)
@pytest.mark.usefixtures("paid")
def test_a_clock_set_back_across_midnight_gives_no_second_allowance(
    tmp_path: Path, emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.budget import clock

    cap = 5
    today = clock.utc_today()
    monkeypatch.setattr(clock, "utc_today", lambda: today)
    job = str(embed_job(tmp_path, 300, f"budget: {{daily_neurons: {cap}}}"))
    assert invoke("budget", "--assume-unused")[0] == 0
    code, out = invoke("run", "--no-progress", job)
    assert code == 3, out
    spent = emu.stats()["neurons_today"]
    assert 0 < spent <= cap
    monkeypatch.setattr(clock, "utc_today", lambda: clock.shift_day(today, -1))
    code, out = invoke("run", "--no-progress", job)
    assert code == 3, out
    assert emu.stats()["neurons_today"] == spent  # nothing more: the later day was kept
    code, out = invoke("budget")
    assert f"on {today} (UTC)" in out and "clock      behind" in out
