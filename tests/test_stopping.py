"""Every run can be stopped, and stops fast: after the first Ctrl-C no new request is sent
(at most the ones in flight reach the server), a second one abandons those, pauses of any
kind end at once, the ``--wait`` sleep too, and a ledger locked by another process never
keeps the run from answering a signal or from updating its progress."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from pipelines.budget import Ledger
from pipelines.emulator import EmulatorConfig, running_emulator
from pipelines.emulator.server import RunningEmulator
from pipelines.job.load import load_job
from pipelines.providers.base import ProviderSettings
from pipelines.providers.cloudflare import CloudflareProvider
from pipelines.run.budget_guard import RunBudget
from pipelines.run.report import StopReason
from pipelines.run.runner import RunContext, arun_job

SMALL = "@cf/baai/bge-small-en-v1.5"


@pytest.fixture
def emu() -> Iterator[RunningEmulator]:
    # not the shared emulator of conftest: these tests leave requests hanging on purpose,
    # and the next test would wait for them
    with running_emulator(EmulatorConfig(rpm_scale=100)) as emulator:
        yield emulator


def write_job(tmp: Path, rows: int, limits: str, budget: str = "") -> Path:
    pl.DataFrame(
        {"id": [str(i) for i in range(rows)], "text": [f"text {i}" for i in range(rows)]}
    ).write_csv(tmp / "in.csv")
    job = tmp / "job.yaml"
    job.write_text(
        f"""name: stop-me
source: {{kind: csv, path: in.csv, key: id}}
task: {{kind: embed, model: "{SMALL}", input: text}}
output: {{path: out.parquet}}
limits: {limits}
{budget}
"""
    )
    return job


def start(emu: RunningEmulator, job: Path, *flags: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "CLOUDFLARE_ACCOUNT_ID": "acct",
        "CLOUDFLARE_API_TOKEN": "tok",
        "CLOUDFLARE_API_BASE_URL": emu.base_url,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines", "run", "--no-progress", *flags, str(job)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(predicate: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_after_ctrl_c_at_most_the_requests_in_flight_reach_the_server(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    concurrency = 4
    emu.config.latency_ms = 300
    job = write_job(tmp_path, 3000, f"{{batch_size: 5, concurrency: {concurrency}}}")
    proc = start(emu, job)
    wait_for(lambda: emu.stats()["requests_total"] >= 3 * concurrency, "requests")
    at_signal = emu.stats()["requests_total"]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "stopping…" in err and "Traceback" not in err
    after = emu.stats()["requests_total"] - at_signal
    assert after <= concurrency, after
    done = pl.read_parquet(tmp_path / "out.parquet")
    # every request the server answered was kept: none of it is paid again
    assert done.height == emu.stats()["models"][SMALL]["items"]


def test_a_second_ctrl_c_abandons_the_requests_in_flight(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    job = write_job(tmp_path, 100, "{batch_size: 5, concurrency: 2}")
    emu.config.latency_ms = 60_000  # nothing would come back for a minute
    proc = start(emu, job)
    wait_for(lambda: _in_flight(tmp_path), "the run to start")
    time.sleep(1.0)  # the requests go out at once and then hang for a minute
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)  # far less than the minute the requests would take
    assert proc.returncode == 130, err
    assert "abandoning" in err and "Traceback" not in err


def _in_flight(tmp: Path) -> bool:
    # the run has opened its work folder: the lock and the output are set up, workers go
    return (tmp / ".out.parquet.pipelines" / "meta.json").exists()


@pytest.mark.parametrize("pause", ["backoff", "rate-limit"])
def test_ctrl_c_ends_a_pause_at_once(tmp_path: Path, emu: RunningEmulator, pause: str) -> None:
    if pause == "backoff":
        emu.config.error_rate = 1.0  # every request: 5xx, and the backoff grows to a minute
        limits = "{batch_size: 5, concurrency: 2, max_attempts: 50}"
    else:
        emu.config.rpm_scale = 0.0004  # 3000 rpm → 1: the second request waits ~a minute
        limits = "{batch_size: 5, concurrency: 2, requests_per_minute: 100000}"
    proc = start(emu, write_job(tmp_path, 100, limits))
    refused = "500" if pause == "backoff" else "429"
    wait_for(lambda: emu.stats()["status_counts"].get(refused, 0) >= 1, "the first refusal")
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "Traceback" not in err


def test_ctrl_c_during_the_wait_for_midnight_exits_130(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    job = write_job(tmp_path, 300, "{requests_per_minute: 100000}", "budget: {daily_neurons: 1}")
    proc = start(emu, job, "--wait")
    wait_for(lambda: proc.stderr is not None and _waiting(tmp_path), "the budget stop")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "Aborted!" not in err and "Traceback" not in err


def _waiting(tmp: Path) -> bool:
    manifest = tmp / "out.manifest.json"
    return manifest.exists() and '"budget"' in manifest.read_text()


class Recorder:
    """Progress that notes when it was refreshed."""

    def __init__(self) -> None:
        self.refreshes: list[float] = []

    def start(self, total: int | None) -> None:
        pass

    def update(self, rows: int, neurons: float) -> None:
        self.refreshes.append(time.time())

    def refresh(self) -> None:
        self.refreshes.append(time.time())


def _hold_write_lock(path: Path, seconds: float, held: threading.Event) -> None:
    script = (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('BEGIN IMMEDIATE')\n"
        "print('held', flush=True)\n"
        f"time.sleep({seconds})\n"
        "c.execute('COMMIT')\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    held.set()
    proc.wait(timeout=30)
    proc.stdout.close()


def test_a_locked_ledger_never_blocks_signals_or_progress(
    tmp_path: Path, emu: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pipelines")
    job = load_job(write_job(tmp_path, 2000, "{batch_size: 5, concurrency: 2}"))
    emu.config.latency_ms = 20
    ledger_path = tmp_path / "ledger.sqlite3"
    progress = Recorder()
    times: dict[str, float] = {}

    async def scenario() -> object:
        with Ledger(ledger_path, account="acct") as ledger:
            settings = ProviderSettings(emu.base_url, "acct", "tok")
            async with CloudflareProvider(settings) as provider:
                context = RunContext(
                    provider=provider,
                    budget=RunBudget(ledger),
                    produced_by=f"emulator:{SMALL}",
                    progress=progress,
                )
                run = asyncio.create_task(arun_job(job, context))
                while emu.stats()["requests_total"] < 5:
                    await asyncio.sleep(0.05)
                held = threading.Event()
                locker = threading.Thread(target=_hold_write_lock, args=(ledger_path, 3.0, held))
                locker.start()
                await asyncio.to_thread(held.wait)
                times["locked"] = time.time()
                await asyncio.sleep(1.0)
                os.kill(os.getpid(), signal.SIGINT)
                times["signal"] = time.time()
                await asyncio.sleep(0.2)
                times["after_signal"] = time.time()
                report = await run
                await asyncio.to_thread(locker.join)
                times["unlocked"] = time.time()
                return report

    report = asyncio.run(scenario())
    assert report.stop_reason is StopReason.INTERRUPTED  # type: ignore[attr-defined]
    # the signal was answered while the other process still held the lock
    stopping = [r for r in caplog.records if "stopping" in r.getMessage()]
    assert stopping, "the run did not answer the signal"
    assert stopping[0].created < times["locked"] + 2.5
    # and the progress display kept refreshing through the locked seconds
    during = [t for t in progress.refreshes if times["locked"] < t < times["locked"] + 2.5]
    assert len(during) >= 3, during


def test_sqlite_lock_holder_really_blocks_writers(tmp_path: Path) -> None:
    # the scenario above is only a test if the other process's lock does block the ledger
    path = tmp_path / "ledger.sqlite3"
    Ledger(path).close()
    held = threading.Event()
    locker = threading.Thread(target=_hold_write_lock, args=(path, 1.5, held))
    locker.start()
    held.wait()
    conn = sqlite3.connect(path, timeout=0.1, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError):
        conn.execute("BEGIN IMMEDIATE")
    conn.close()
    locker.join()
