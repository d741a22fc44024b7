"""Issue 17: the ledger in PostgreSQL, what only a shared database has: a database that is
down or a wrong URL is one ``error:`` line and exit 2 before anything is sent, the URL's
password never shows, losing the database stops new reservations, the day and times come
from the database's clock, and a worker that died on another machine (its session gone)
gives its reservations back."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pipelines.budget import Ledger
from pipelines.core.errors import StateError
from pipelines.emulator.server import RunningEmulator

DAY = "2026-11-28"
SECRET = "s3cr3t-Pa55"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def down_url() -> str:
    return f"postgresql://pipe:{SECRET}@127.0.0.1:{closed_port()}/ledger"


def test_a_database_that_is_down_is_one_line_without_the_password() -> None:
    with pytest.raises(StateError) as info:
        Ledger(url=down_url(), day_fn=lambda: DAY)
    message = info.value.message
    assert info.value.exit_code == 2
    assert "\n" not in message and SECRET not in message
    assert "cannot be reached" in message and "pipe:***@127.0.0.1" in message


def test_a_url_that_is_not_postgres_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINES_LEDGER_URL", f"mysql://u:{SECRET}@h/db")
    with pytest.raises(StateError) as info:
        Ledger(day_fn=lambda: DAY)
    assert "postgresql://" in info.value.message and SECRET not in info.value.message


def test_the_environment_moves_the_ledger_and_an_explicit_file_stays_a_file(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPELINES_LEDGER_URL", pg_url)
    with Ledger(account="a", day_fn=lambda: DAY) as shared:
        assert shared.url == pg_url
        shared.commit(shared.reserve("j", "m", 7), 7)
    with Ledger(tmp_path / "own.sqlite3", account="a", day_fn=lambda: DAY) as own:
        assert own.url is None and own.today().committed == 0
    with Ledger(url=pg_url, account="a", day_fn=lambda: DAY) as again:
        assert again.today().committed == 7


def test_the_global_config_names_the_database(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = Path(os.environ["PIPELINES_CONFIG"])
    config.write_text(f"budget:\n  ledger_url: {pg_url}\n")
    with Ledger(account="a", day_fn=lambda: DAY) as ledger:
        assert ledger.url == pg_url


def test_the_day_and_times_are_the_databases(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        ).fetchone()
    assert row is not None
    with Ledger(url=pg_url, account="a") as ledger:  # no day_fn: the database's date
        assert ledger.today().day == row[0]


def test_a_worker_whose_session_ended_gives_its_reservations_back(pg_url: str) -> None:
    with Ledger(url=pg_url, account="a", daily_neurons=100, day_fn=lambda: DAY) as ledger:
        ledger.reserve("j", "m", 60)
        # as if on another machine: this host never sees the pid, only the session
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("UPDATE reservations SET host = 'elsewhere', pid = 1")
        with Ledger(url=pg_url, account="a", daily_neurons=100, day_fn=lambda: DAY) as b:
            assert b.today().reserved == 60  # its session is alive: kept
            ledger.close()  # the worker's connection ends
            for _ in range(200):  # the server notices the closed connection at once
                if b.today().reserved == 0:
                    break
            assert b.today().reserved == 0
            assert b.available() == 100


def test_losing_the_database_stops_new_reservations(pg_server: Any) -> None:
    # a server of its own would be slow; this stops the session's and starts it again
    url = pg_server.database()
    with Ledger(url=url, account="a", daily_neurons=100, day_fn=lambda: DAY) as ledger:
        held = ledger.reserve("j", "m", 10)
        pg_server.stop("immediate")
        try:
            with pytest.raises(StateError) as info:
                ledger.reserve("j", "m", 10)
            assert "\n" not in info.value.message
            with pytest.raises(StateError):
                ledger.commit(held, 10)
        finally:
            pg_server.start()
        ledger.commit(ledger.reserve("j", "m", 5), 5)  # it reconnects when it is back
        assert ledger.today().committed == 5


def _job(folder: Path) -> Path:
    (folder / "in.csv").write_text("id,text\n1,hello\n2,world\n")
    job = folder / "job.yaml"
    job.write_text(
        "name: shared\nsource: {kind: csv, path: in.csv, key: id}\n"
        'task: {kind: embed, model: "@cf/baai/bge-small-en-v1.5", input: text}\n'
        "output: {path: out/shared.parquet}\n"
    )
    return job


def test_the_cli_refuses_a_database_that_is_down_before_any_request(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    before = emu.stats()["requests_total"]
    env = {
        **os.environ,
        "CLOUDFLARE_ACCOUNT_ID": "shared",
        "CLOUDFLARE_API_TOKEN": "t0ken",
        "CLOUDFLARE_API_BASE_URL": emu.base_url,
        "PIPELINES_LEDGER_URL": down_url(),
    }
    done = subprocess.run(
        [sys.executable, "-m", "pipelines", "run", "--no-progress", str(_job(tmp_path))],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr
    assert SECRET not in done.stdout + done.stderr
    logs = "".join(p.read_text() for p in (tmp_path / "state").rglob("*.log"))
    assert SECRET not in logs
    assert emu.stats()["requests_total"] == before
    assert not (tmp_path / "out" / "shared.parquet").exists()


def test_budget_commands_use_the_shared_ledger(pg_url: str) -> None:
    env = {**os.environ, "PIPELINES_LEDGER_URL": pg_url, "CLOUDFLARE_ACCOUNT_ID": "acct"}
    command = [sys.executable, "-m", "pipelines", "budget"]
    done = subprocess.run(
        [*command, "--assume-unused"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    with Ledger(url=pg_url, account="acct") as ledger:  # the database's day, as the CLI's
        assert ledger.usage_known()
        ledger.mark_exhausted("3036")
    done = subprocess.run(
        [*command, "--clear-exhausted"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    with Ledger(url=pg_url, account="acct") as ledger:
        assert not ledger.today().marked


@pytest.mark.slow
@pytest.mark.emulator(rpm_scale=100)
def test_losing_the_database_mid_run_stops_sending_and_keeps_every_answer(
    tmp_path: Path, emu: RunningEmulator, pg_server: Any
) -> None:
    import time

    import polars as pl

    url = pg_server.database()
    rows = 80
    pl.DataFrame(
        {"id": [f"r{i}" for i in range(rows)], "text": [f"text {i}" for i in range(rows)]}
    ).write_csv(tmp_path / "in.csv")
    job = tmp_path / "lost.yaml"
    job.write_text(
        "name: lost\nsource: {kind: csv, path: in.csv, key: id}\n"
        'task: {kind: embed, model: "@cf/baai/bge-small-en-v1.5", input: text}\n'
        "output: {path: out/lost.parquet, keep: [id]}\n"
        "limits: {batch_size: 1, concurrency: 2, requests_per_minute: 600}\n"
    )
    env = {
        **os.environ,
        "CLOUDFLARE_ACCOUNT_ID": "lost",
        "CLOUDFLARE_API_TOKEN": "t0ken",
        "CLOUDFLARE_API_BASE_URL": emu.base_url,
        "PIPELINES_LEDGER_URL": url,
    }
    command = [sys.executable, "-m", "pipelines", "run", "--no-progress", str(job)]
    before = emu.stats()["requests_total"]
    run = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while emu.stats()["requests_total"] < before + 15 and run.poll() is None:
            time.sleep(0.05)  # polling another process: no clock to inject
        pg_server.stop("immediate")
        _, err = run.communicate(timeout=120)
    finally:
        pg_server.start()
    message = err.decode()
    assert run.returncode == 2, message
    assert [line for line in message.splitlines() if line.startswith("error:")]
    assert "Traceback" not in message
    sent = emu.stats()["models"]["@cf/baai/bge-small-en-v1.5"]["items"]
    kept = pl.read_parquet(tmp_path / "out" / "lost.parquet")
    assert 0 < kept.height < rows  # stopped early, what was answered kept
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    final = pl.read_parquet(tmp_path / "out" / "lost.parquet")
    assert final.height == rows and final["id"].n_unique() == rows
    # nothing answered before the loss was asked again
    resent = emu.stats()["models"]["@cf/baai/bge-small-en-v1.5"]["items"] - sent
    assert resent == rows - kept.height


def test_a_ledger_dropped_under_a_run_refuses_the_next_reservation(pg_url: str) -> None:
    with Ledger(url=pg_url, account="a", daily_neurons=100, day_fn=lambda: DAY) as ledger:
        held = ledger.reserve("j", "m", 10)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
        with pytest.raises(StateError, match="dropped or replaced") as info:
            ledger.reserve("j", "m", 10)
        assert "budget --sync" in info.value.message
        ledger.commit(held, 10)  # what was in flight settles without an error
        # a ledger made again by another worker is another ledger too
        Ledger(url=pg_url, account="a", day_fn=lambda: DAY).close()
        with pytest.raises(StateError, match="dropped or replaced"):
            ledger.reserve("j", "m", 10)
