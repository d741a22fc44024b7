"""Holds: the ledger's reservations for Batch API payloads in flight, which outlive the
process that made them (never swept as a dead worker's), count on every day until they are
settled, settle exactly once, and expire if nobody ever settles them."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from pipelines.budget import Ledger
from pipelines.budget.holds import HOLD_EXPIRES_S
from pipelines.core.errors import BudgetExhausted, BudgetStop

DAY = "2026-11-28"


class Days:
    def __init__(self, day: str = DAY) -> None:
        self.day = day

    def __call__(self) -> str:
        return self.day


@pytest.fixture
def days() -> Days:
    return Days()


@pytest.fixture
def ledger(tmp_path: Path, days: Days) -> Any:
    led = Ledger(tmp_path / "ledger.sqlite3", account="acct", daily_neurons=1_000, day_fn=days)
    yield led
    led.close()


def test_a_hold_counts_against_the_cap_like_a_reservation(ledger: Ledger) -> None:
    held = ledger.hold("batch:o:1", "job", "@cf/baai/bge-m3", 600)
    assert (held.account, held.day, held.neurons) == ("acct", DAY, 600)
    assert ledger.today().reserved == 600 and ledger.available() == pytest.approx(400)
    with pytest.raises(BudgetExhausted) as refused:
        ledger.hold("batch:o:2", "job", "@cf/baai/bge-m3", 500)
    assert refused.value.reason is BudgetStop.DAY_CAP
    with pytest.raises(BudgetExhausted) as never:
        ledger.hold("batch:o:3", "job", "@cf/baai/bge-m3", 5_000)
    assert never.value.reason is BudgetStop.CANNOT_FIT
    rows = ledger.by_job_model()
    assert rows == [
        {
            "job": "job",
            "model": "@cf/baai/bge-m3",
            "committed": 0.0,
            "reserved": 600.0,
            "requests": 0,
        }
    ]


def test_a_hold_outlives_its_process_and_is_never_swept(tmp_path: Path, days: Days) -> None:
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path, account="acct", daily_neurons=1_000, day_fn=days) as first:
        first.hold("batch:o:1", "job", "m", 300)
        first.reserve("job", "m", 100)
    # the reservation of a dead process is swept; the hold stays: pretend its pid died
    with sqlite3.connect(path) as c:
        c.execute("UPDATE reservations SET pid = 999999999")
    with Ledger(path, account="acct", daily_neurons=1_000, day_fn=days) as later:
        later.reserve("other", "m", 1)
        assert later.today().reserved == 301
        assert later.recover_stale(max_age_s=0) >= 1  # sweeps every reservation, no hold
        assert later.today().reserved == 300
        assert [h.key for h in later.open_holds("batch:o:")] == ["batch:o:1"]


def test_settling_counts_once_and_releasing_counts_nothing(ledger: Ledger) -> None:
    ledger.hold("batch:o:1", "job", "m", 300)
    ledger.hold("batch:o:2", "job", "m", 200)
    assert ledger.settle_hold("batch:o:1", 120.5) is True
    assert ledger.settle_hold("batch:o:1", 120.5) is False  # a replay after a crash
    assert ledger.settle_hold("batch:o:2", None) is True
    assert ledger.settle_hold("batch:unknown", 50) is False
    today = ledger.today()
    assert (today.committed, today.reserved) == (pytest.approx(120.5), 0)
    assert ledger.open_holds() == []
    (row,) = ledger.by_job_model()
    assert row["requests"] == 1


def test_a_hold_counts_on_every_day_until_settled_then_on_the_later_day(
    ledger: Ledger, days: Days
) -> None:
    ledger.hold("batch:o:1", "job", "m", 300)
    days.day = "2026-11-29"  # the batch is still in flight after midnight
    assert ledger.today().reserved == 300
    assert ledger.available() == pytest.approx(700)
    ledger.settle_hold("batch:o:1", 250)
    history = {d.day: d.committed for d in ledger.history(2)}
    assert history == {"2026-11-28": 0, "2026-11-29": 250}


def test_an_unsettled_hold_expires(ledger: Ledger, tmp_path: Path) -> None:
    ledger.hold("batch:o:1", "job", "m", 300)
    with sqlite3.connect(tmp_path / "ledger.sqlite3") as c:
        c.execute("UPDATE holds SET created = ?", (time.time() - HOLD_EXPIRES_S - 1,))
    assert ledger.today().reserved == 0
    assert ledger.settle_hold("batch:o:1", 10) is True  # a late collection still counts
    assert ledger.today().committed == 10


def test_a_ledger_of_the_previous_version_gets_the_holds_table(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    Ledger(path, account="acct").close()
    with sqlite3.connect(path) as c:
        c.execute("DROP TABLE holds")
        c.execute("PRAGMA user_version = 2")
    with Ledger(path, account="acct", daily_neurons=1_000) as led:
        led.hold("batch:o:1", "job", "m", 1)
        assert led.today().reserved == 1
