"""Issue 11: the ledger's defences against what would make it under-count.

- A ledger deleted or replaced under a run refuses the next reservation (a typed error that
  stops the run); settling what is in flight does not fail.
- The ledger's day never goes back: a clock set back across midnight keeps the later day,
  until the real date catches up.
- A ledger made today does not know what the account spent earlier today: until
  ``budget --sync`` or ``--assume-unused`` says so, it refuses paid runs.
- Cloudflare's 3036/4006 mark can be lifted.
- Every SQLite error while a run uses the ledger is one typed ``StateError``; a ledger made
  immutable is never a SIGBUS (no shared memory is mapped).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.budget import Ledger
from pipelines.budget import clock as budget_clock
from pipelines.budget.pgstore import PgLedgerStore
from pipelines.core.errors import BudgetExhausted, StateError

DAY = "2026-03-10"


class Today:
    """The UTC date as the ledger reads it (``pipelines.budget.clock.utc_today``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, day: str = DAY) -> None:
        self.day = day
        monkeypatch.setattr(budget_clock, "utc_today", lambda: self.day)
        # the shared ledger reads the database's date: the same test moves it
        monkeypatch.setattr(PgLedgerStore, "today", lambda _store, _c: self.day)


@pytest.fixture(params=["sqlite", "postgres"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The SQLite file or a PostgreSQL database (issue 17): the same defences on both."""
    if request.param == "postgres":
        return {"url": request.getfixturevalue("pg_url")}
    return {"path": tmp_path / "l.sqlite3"}


@pytest.fixture
def today(monkeypatch: pytest.MonkeyPatch) -> Today:
    return Today(monkeypatch)


def spend(ledger: Ledger, neurons: float) -> None:
    ledger.commit(ledger.reserve("job", "m", neurons), neurons)


# -- deleted or replaced under a run ---------------------------------------------------------


def test_a_ledger_deleted_under_a_run_refuses_the_next_reservation(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path, daily_neurons=100) as ledger:
        spend(ledger, 60)
        held = ledger.reserve("job", "m", 10)
        for file in tmp_path.iterdir():
            file.unlink()
        with pytest.raises(StateError) as info:
            ledger.reserve("job", "m", 10)
        message = info.value.message
        assert info.value.exit_code == 2 and "\n" not in message
        assert str(path) in message and "deleted or replaced" in message
        assert "budget --sync" in message
        with pytest.raises(StateError):
            ledger.available()
        ledger.commit(held, 10)  # what was in flight settles without an error
    # a ledger created in its place knows nothing, and says so
    with Ledger(path, daily_neurons=100) as fresh:
        assert fresh.today().committed == 0
        assert not fresh.usage_known()


def test_a_ledger_replaced_under_a_run_refuses_the_next_reservation(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    other = tmp_path / "elsewhere" / "ledger.sqlite3"
    Ledger(other).close()
    with Ledger(path, daily_neurons=100) as ledger:
        spend(ledger, 60)
        os.replace(other, path)
        with pytest.raises(StateError, match="deleted or replaced"):
            ledger.reserve("job", "m", 10)


# -- the day never goes back -------------------------------------------------------------


def test_a_clock_set_back_across_midnight_gives_no_second_allowance(
    place: dict[str, Any], today: Today
) -> None:
    with Ledger(**place, daily_neurons=100) as ledger:
        spend(ledger, 30)  # yesterday, a little
        today.day = budget_clock.shift_day(DAY, 1)
        spend(ledger, 100)  # today, all of it
        today.day = DAY  # the clock goes back across midnight
        with pytest.raises(BudgetExhausted):
            ledger.reserve("job", "m", 1)
        usage = ledger.today()
        assert usage.day == budget_clock.shift_day(DAY, 1)  # the later day is kept
        assert (usage.committed, usage.remaining) == (100, 0)


def test_the_later_day_holds_across_processes_until_the_date_catches_up(
    place: dict[str, Any], today: Today
) -> None:
    later = budget_clock.shift_day(DAY, 1)
    today.day = later
    with Ledger(**place, daily_neurons=100) as first:
        spend(first, 100)
    today.day = DAY
    with Ledger(**place, daily_neurons=100) as second:  # another process, the clock set back
        assert second.today().day == later
        assert second.available() == 0
        with Ledger(**place, account="other", daily_neurons=100) as other:
            spend(other, 5)  # per account
    today.day = budget_clock.shift_day(DAY, 2)  # the real date moves past it
    with Ledger(**place, daily_neurons=100) as third:
        assert third.today().day == today.day
        assert third.available() == 100


# -- a new ledger does not know today ------------------------------------------------------


def test_a_ledger_made_today_does_not_know_todays_usage(
    place: dict[str, Any], today: Today
) -> None:
    with Ledger(**place, account="acct") as ledger:
        assert not ledger.usage_known()
        with pytest.raises(StateError) as info:
            ledger.require_known_usage()
        message = info.value.message
        assert "budget --sync" in message and "budget --assume-unused" in message
        shown = str(place.get("path") or "127.0.0.1")
        assert "acct" in message and shown in message and "\n" not in message


def test_synced_or_assumed_usage_is_known_for_that_day_and_account(
    place: dict[str, Any], today: Today
) -> None:
    with Ledger(**place, account="a") as a, Ledger(**place, account="b") as b:
        a.record_external({})  # the account's analytics: nothing used today
        b.assume_unused()
        assert a.usage_known() and b.usage_known()
        a.require_known_usage()
        with Ledger(**place, account="c") as c:
            assert not c.usage_known()
    today.day = budget_clock.shift_day(DAY, 1)
    with Ledger(**place, account="a") as a:
        # the ledger existed before this day began: every run of the day went through it
        assert a.usage_known()


def test_a_ledger_older_than_today_knows_today(place: dict[str, Any], today: Today) -> None:
    Ledger(**place).close()  # made on DAY
    with Ledger(**place, account="never-seen") as ledger:
        assert not ledger.usage_known()
    today.day = budget_clock.shift_day(DAY, 1)
    with Ledger(**place, account="never-seen") as ledger:
        assert ledger.usage_known()  # every run on this machine today went through it


# -- Cloudflare's mark ---------------------------------------------------------------------


def test_a_3036_mark_can_be_lifted(place: dict[str, Any]) -> None:
    with Ledger(**place) as ledger:
        ledger.mark_exhausted("429 / 3036")
        assert ledger.today().marked and ledger.available() == 0
        assert ledger.clear_exhausted() is True
        usage = ledger.today()
        assert not usage.marked and not usage.exhausted and usage.note == ""
        assert ledger.available() == 10_000
        assert ledger.clear_exhausted() is False  # nothing left to lift
        spend(ledger, 5)


# -- SQLite errors under a run ---------------------------------------------------------------


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    """Files put here are made immutable (``chattr +i``) and released after the test."""
    paths: list[Path] = []
    yield paths
    for path in paths:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True, check=False)


def make_immutable(paths: list[Path], registry: list[Path]) -> None:
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("chattr is not available here: no way to make a file immutable")
    for path in paths:
        done = subprocess.run([chattr, "+i", str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"chattr +i is refused here: {done.stderr.strip()}")
        registry.append(path)


_IMMUTABLE_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from pipelines.budget import Ledger
    from pipelines.core.errors import StateError

    ledger = Ledger(Path(sys.argv[1]))
    r = ledger.reserve("job", "m", 1)
    ledger.commit(r, 1)
    print("ready", flush=True)
    sys.stdin.readline()  # the test makes the files immutable meanwhile
    for step in range(3):
        try:
            ledger.commit(ledger.reserve("job", "m", 1), 1)
        except StateError as exc:
            print("StateError", exc.exit_code, exc.message, flush=True)
    ledger.close()
    """
)


def test_a_ledger_made_immutable_is_a_typed_error_never_a_crash(
    tmp_path: Path, immutable: list[Path]
) -> None:
    path = tmp_path / "ledger.sqlite3"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _IMMUTABLE_SCRIPT, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        os.sync()  # written back: the next write to a mapped page would fault
        make_immutable(sorted(tmp_path.iterdir()), immutable)
        out, err = proc.communicate("go\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (proc.returncode, err)  # not 135 (SIGBUS)
    lines = out.splitlines()
    assert len(lines) == 3, out
    for line in lines:
        assert line.startswith("StateError 2 "), line
        assert str(path) in line and "neuron ledger" in line
    assert "Traceback" not in err


def test_the_ledger_maps_no_shared_memory(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path) as ledger:
        spend(ledger, 1)
        assert not path.with_name(path.name + "-shm").exists()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal"
    finally:
        conn.close()
