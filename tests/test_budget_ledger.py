"""The neuron ledger: arithmetic, caps, exhaustion, days, stale reservations, processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipelines.budget import Ledger, default_ledger_path, next_reset, seconds_until_reset
from pipelines.budget.ledger import EXTERNAL_JOB
from pipelines.core.errors import BudgetExhausted, BudgetStop

DAY = "2026-11-28"


class Days:
    """A day_fn whose day the test moves."""

    def __init__(self, day: str = DAY) -> None:
        self.day = day

    def __call__(self) -> str:
        return self.day


@pytest.fixture
def days() -> Days:
    return Days()


@pytest.fixture(params=["sqlite", "postgres"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Where the ledger lives: the SQLite file, or a PostgreSQL database (issue 17): the
    same tests run against both."""
    if request.param == "postgres":
        return {"url": request.getfixturevalue("pg_url")}
    return {"path": tmp_path / "ledger.sqlite3"}


def where(place: dict[str, Any]) -> str:
    return str(place.get("url") or place["path"])


def open_at(arg: str, **kw: Any) -> Ledger:
    """A ledger at a place given as text (a subprocess's argument)."""
    if arg.startswith("postgresql://"):
        return Ledger(url=arg, **kw)
    return Ledger(Path(arg), **kw)


@pytest.fixture
def ledger(place: dict[str, Any], days: Days) -> Any:
    led = Ledger(**place, account="acct", daily_neurons=1_000, day_fn=days)
    yield led
    led.close()


def test_default_path_is_in_the_state_dir(tmp_path: Path) -> None:
    assert default_ledger_path() == tmp_path / "state" / "ledger.sqlite3"
    with Ledger(day_fn=Days()) as led:
        led.reserve("j", "m", 1)
    assert (tmp_path / "state" / "ledger.sqlite3").is_file()


def test_reserve_commit_release_arithmetic(ledger: Ledger) -> None:
    a = ledger.reserve("job", "@cf/baai/bge-m3", 100)
    b = ledger.reserve("job", "@cf/baai/bge-m3", 50.5)
    assert (a.account, a.day, a.job, a.neurons) == ("acct", DAY, "job", 100)
    u = ledger.today()
    assert (u.committed, u.reserved, u.remaining, u.cap) == (0, 150.5, 849.5, 1_000)
    assert ledger.available() == pytest.approx(849.5)

    ledger.commit(a, 120)  # the actual figure may exceed the estimate
    ledger.release(b)
    u = ledger.today()
    assert (u.committed, u.reserved) == (120, 0)
    assert u.remaining == pytest.approx(880)
    assert not u.exhausted
    assert u.resets_at == datetime(2026, 11, 29, tzinfo=UTC)

    # Settling twice counts once.
    ledger.commit(a, 120)
    ledger.release(b)
    assert ledger.today().committed == 120


def test_cap_refuses_and_reports(ledger: Ledger) -> None:
    r = ledger.reserve("job", "m", 987)
    ledger.commit(r, 987)
    with pytest.raises(BudgetExhausted) as err:
        ledger.reserve("job", "m", 14)
    msg = err.value.message
    assert "daily neuron cap reached (987 / 1,000 on 2026-11-28 UTC" in msg
    assert err.value.reason is BudgetStop.DAY_CAP  # the report adds when it resumes
    assert err.value.exit_code == 3
    # Exactly up to the cap is fine, float sums included.
    for _ in range(10):
        ledger.reserve("job", "m", 1.3)
    with pytest.raises(BudgetExhausted):
        ledger.reserve("job", "m", 0.01)
    assert ledger.available() == pytest.approx(0, abs=1e-6)


def test_reserve_setting_keeps_neurons_back(place: dict[str, Any], days: Days) -> None:
    led = Ledger(**place, daily_neurons=10_000, reserve=2_000, day_fn=days)
    assert led.available() == 8_000
    led.reserve("j", "m", 7_000)
    with pytest.raises(BudgetExhausted, match="2,000 kept in reserve"):
        led.reserve("j", "m", 1_001)
    led.reserve("j", "m", 1_000)
    u = led.today()
    assert u.remaining == 2_000  # remaining ignores the reserve setting
    assert led.available() == 0
    led.close()


def test_single_request_over_the_budget_says_so(ledger: Ledger) -> None:
    with pytest.raises(BudgetExhausted, match="one request needs 1,500 neurons"):
        ledger.reserve("j", "m", 1_500)


def test_bad_figures_are_rejected(ledger: Ledger) -> None:
    with pytest.raises(ValueError):
        ledger.reserve("j", "m", -1)
    with pytest.raises(ValueError):
        ledger.reserve("j", "m", float("nan"))
    r = ledger.reserve("j", "m", 1)
    with pytest.raises(ValueError):
        ledger.commit(r, float("inf"))


def test_mark_exhausted_stops_every_job_until_the_next_day(
    place: dict[str, Any], ledger: Ledger, days: Days
) -> None:
    ledger.reserve("a", "m", 10)
    other = Ledger(**place, account="acct", daily_neurons=1_000, day_fn=days)
    other.mark_exhausted("3036: used up your daily free allocation")
    with pytest.raises(BudgetExhausted, match="Cloudflare reports") as err:
        ledger.reserve("b", "m2", 1)
    assert "3036" in err.value.message
    assert ledger.available() == 0
    u = ledger.today()
    assert u.exhausted and "3036" in u.note
    # Another account is not affected.
    third = Ledger(**place, account="other", day_fn=days)
    third.reserve("c", "m", 5)
    days.day = "2026-11-29"
    assert not ledger.today().exhausted
    ledger.reserve("b", "m2", 1)
    other.close()
    third.close()


def test_remaining_zero_counts_as_exhausted(ledger: Ledger) -> None:
    ledger.commit(ledger.reserve("j", "m", 1_000), 1_100)
    u = ledger.today()
    assert u.committed == 1_100 and u.remaining == 0 and u.exhausted


def test_a_new_day_starts_from_zero(ledger: Ledger, days: Days) -> None:
    ledger.commit(ledger.reserve("j", "m", 900), 900)
    assert ledger.available() == 100
    days.day = "2026-11-29"
    assert ledger.available() == 1_000
    u = ledger.today()
    assert (u.day, u.committed, u.reserved) == ("2026-11-29", 0, 0)
    r = ledger.reserve("j", "m", 1_000)
    assert r.day == "2026-11-29"


def test_commit_goes_to_the_reservations_day(ledger: Ledger, days: Days) -> None:
    r = ledger.reserve("j", "m", 10)
    days.day = "2026-11-29"
    ledger.commit(r, 12)
    assert ledger.today().committed == 0
    assert ledger.by_job_model(DAY)[0]["committed"] == 12


def test_by_job_model_and_external_usage(ledger: Ledger) -> None:
    ledger.commit(ledger.reserve("nightly", "m1", 30), 30)
    ledger.commit(ledger.reserve("nightly", "m1", 30), 25)
    ledger.commit(ledger.reserve("weekly", "m2", 10), 10)
    ledger.reserve("weekly", "m2", 7)
    rows = ledger.by_job_model()
    assert rows == [
        {"job": "nightly", "model": "m1", "committed": 55, "reserved": 0, "requests": 2},
        {"job": "weekly", "model": "m2", "committed": 10, "reserved": 7, "requests": 1},
    ]
    # The account's analytics: m1 lags behind us, m3 is someone else's use.
    ledger.record_external({"m1": 40, "m2": 25, "m3": 100})
    u = ledger.today()
    assert u.committed == 55 + 25 + 100
    assert u.remaining == 1_000 - 180 - 7
    rows = ledger.by_job_model()
    outside = {r["model"]: r["committed"] for r in rows if r["job"] == EXTERNAL_JOB}
    assert outside == {"m2": 15, "m3": 100}
    assert sum(r["committed"] for r in rows) == u.committed
    # A later sync replaces the earlier one.
    ledger.record_external({"m1": 60})
    assert ledger.today().committed == 60 + 10


def test_history_oldest_first_with_gaps(place: dict[str, Any], days: Days) -> None:
    days.day = "2026-11-25"
    led = Ledger(**place, daily_neurons=500, day_fn=days)
    led.commit(led.reserve("j", "m", 400), 400)
    led.close()
    days.day = "2026-11-27"
    led = Ledger(**place, daily_neurons=1_000, day_fn=days)
    led.commit(led.reserve("j", "m", 100), 100)
    led.mark_exhausted("4006")
    days.day = "2026-11-28"
    led.reserve("j", "m", 5)
    hist = led.history(4)
    assert [d.day for d in hist] == ["2026-11-25", "2026-11-26", "2026-11-27", "2026-11-28"]
    assert [d.committed for d in hist] == [400, 0, 100, 0]
    assert [d.cap for d in hist] == [500, 1_000, 1_000, 1_000]  # the cap of that day
    assert [d.exhausted for d in hist] == [False, False, True, False]
    assert hist[-1].reserved == 5
    led.close()


_DIE_SCRIPT = """
import sys
from pathlib import Path
from pipelines.budget import Ledger
arg = sys.argv[1]
place = dict(url=arg) if arg.startswith("postgresql://") else dict(path=Path(arg))
led = Ledger(**place, day_fn=lambda: "{day}")
led.reserve("crashed", "m", 9_000)
# exits without commit or release, as a killed process would
"""


def test_reservations_of_dead_processes_are_released(place: dict[str, Any], days: Days) -> None:
    script = textwrap.dedent(_DIE_SCRIPT).format(day=DAY)
    subprocess.run([sys.executable, "-c", script, where(place)], check=True)
    led = Ledger(**place, day_fn=days)
    # The dead process's 9,000 must not block this reservation.
    led.reserve("alive", "m", 5_000)
    u = led.today()
    assert u.reserved == 5_000
    led.close()


def test_recover_stale_by_pid_and_age(place: dict[str, Any], days: Days) -> None:
    script = textwrap.dedent(_DIE_SCRIPT).format(day=DAY)
    subprocess.run([sys.executable, "-c", script, where(place)], check=True)
    led = Ledger(**place, day_fn=days)
    assert led.recover_stale() == 1  # the dead pid
    mine = led.reserve("j", "m", 10)
    assert led.recover_stale() == 0  # alive and young
    assert led.recover_stale(max_age_s=-1) == 1  # too old, however alive
    assert led.today().reserved == 0
    led.commit(mine, 10)  # a swept reservation still counts when it is billed
    assert led.today().committed == 10
    led.close()


def test_reservations_of_live_processes_stay(place: dict[str, Any], days: Days) -> None:
    a = Ledger(**place, day_fn=days)
    b = Ledger(**place, day_fn=days)
    a.reserve("j", "m", 100)
    assert b.today().reserved == 100
    assert b.available() == 9_900
    a.close()
    b.close()


def test_reset_helpers() -> None:
    now = datetime(2026, 11, 28, 23, 30, tzinfo=UTC)
    assert next_reset(now) == datetime(2026, 11, 29, tzinfo=UTC)
    assert seconds_until_reset(now) == 1_800
    # Naive times are UTC; other zones are converted.
    assert seconds_until_reset(datetime(2026, 11, 28, 23, 30)) == 1_800
    from datetime import timezone

    plus2 = timezone(timedelta(hours=2))
    assert next_reset(datetime(2026, 11, 29, 1, 0, tzinfo=plus2)) == datetime(
        2026, 11, 29, tzinfo=UTC
    )
    assert seconds_until_reset(datetime(2026, 11, 28, tzinfo=UTC)) == 86_400
    assert 0 < seconds_until_reset() <= 86_400


# -- several processes on one ledger ------------------------------------------------------

CAP = 2_000.0  # long enough a race that every process takes part, even on a loaded machine


def _hammer(path: str, seed: int, start: Any, out: Any) -> None:
    rng = random.Random(seed)
    led = open_at(path, account="shared", daily_neurons=CAP, day_fn=lambda: DAY)
    start.wait()  # all processes begin together
    committed = 0.0
    worst = 0.0
    for _ in range(5_000):
        estimate = rng.uniform(0.5, 3.0)
        try:
            r = led.reserve(f"job{seed}", "m", estimate)
        except BudgetExhausted:
            if led.available() < 0.5:
                break
            continue
        u = led.today()
        worst = max(worst, u.committed + u.reserved)
        if rng.random() < 0.2:
            led.release(r)
        else:
            actual = estimate * rng.uniform(0.5, 1.0)
            led.commit(r, actual)
            committed += actual
    led.close()
    out.put((os.getpid(), committed, worst))


def test_processes_never_exceed_the_cap_together(place: dict[str, Any]) -> None:
    ctx = mp.get_context("spawn")
    path = where(place)
    start = ctx.Barrier(6)
    out = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(path, i, start, out)) for i in range(5)]
    for p in procs:
        p.start()
    start.wait(timeout=120)
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert len({pid for pid, _, _ in results}) == 5
    total = sum(c for _, c, _ in results)
    worst = max(w for _, _, w in results)
    led = open_at(path, account="shared", daily_neurons=CAP, day_fn=lambda: DAY)
    u = led.today()
    assert u.reserved == 0
    assert u.committed == pytest.approx(total)
    assert u.committed <= CAP
    assert worst <= CAP + 1e-6  # committed + reserved, seen at any moment by any process
    # They really competed, and the cap was really reached (not a trivial pass).
    assert sum(1 for _, c, _ in results if c > 0) >= 2
    assert sum(r["requests"] for r in led.by_job_model()) > 100
    assert u.committed > CAP * 0.5
    led.close()
