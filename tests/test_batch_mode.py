"""Batch mode in process, against the emulator on a fake clock: payloads packed to the
limits, answers matched by reference or id in any order, polls backing off from seconds to
minutes, the hold in the ledger from submission to collection, failed items, a 3036 inside a
batch, and a run stopped with batches in flight that the next run collects without sending
them again."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from batch_helpers import BGE, Watched, output_keys, run_batch, write_job

from pipelines.budget import Ledger
from pipelines.emulator import FakeClock
from pipelines.emulator.server import RunningEmulator
from pipelines.output.batches import BOOK_FILE
from pipelines.run.report import StopReason
from pipelines.run.runner import Runner

pytestmark = pytest.mark.emulator(batch_delay_s=600, rpm_scale=10, daily_neurons=1e6)


def work(tmp: Path) -> Path:
    return tmp / "out/.result.parquet.pipelines"


def test_every_row_once_in_payloads_of_at_most_batch_items(
    tmp_path: Path, emu: RunningEmulator, fake_clock: FakeClock
) -> None:
    job = write_job(tmp_path, 2_000, "{mode: batch, batch_items: 6}")
    report, provider = run_batch(job, emu, fake_clock)
    assert report.stop_reason is StopReason.DONE, report.message
    assert output_keys(tmp_path) == list(range(2_000))
    # 20 requests of 100 texts, 6 a payload: 4 payloads
    assert provider.submits == report.batches_submitted == report.batches_collected == 4
    stats = emu.stats()["models"][BGE]
    assert stats["items"] == 2_000  # each text billed once
    assert report.neurons == pytest.approx(stats["neurons"])
    assert not (work(tmp_path) / BOOK_FILE).exists()  # nothing in flight, no book left
    with Ledger(tmp_path / "ledger.sqlite3", account="emu", day_fn=emu.day) as ledger:
        assert ledger.open_holds() == [] and ledger.today().reserved == 0
        assert ledger.today().committed == pytest.approx(stats["neurons"])


def test_polls_back_off_from_seconds_to_minutes(
    tmp_path: Path, emu: RunningEmulator, fake_clock: FakeClock
) -> None:
    emu.config.batch_delay_s = 3 * 3600  # a batch that takes three hours
    job = write_job(tmp_path, 100)
    start = fake_clock.monotonic()
    polled: list[float] = []
    report, provider = run_batch(
        job,
        emu,
        fake_clock,
        prepare=lambda _r, p: setattr(
            p, "on_poll", lambda _: polled.append(fake_clock.monotonic())
        ),
    )
    assert report.stop_reason is StopReason.DONE and report.rows_done == 100
    gaps = [b - a for a, b in itertools.pairwise(polled)]
    assert polled[0] - start < 1  # the first poll at once
    assert gaps[:4] == pytest.approx([2, 4, 8, 16], abs=0.1)  # seconds ...
    assert max(gaps) == pytest.approx(300, abs=0.1)  # ... to five minutes, no more
    assert fake_clock.monotonic() - start >= 3 * 3600
    assert provider.polls < 60  # three hours at most every 5 minutes, after the back-off


def test_answers_are_matched_by_reference_or_id_in_any_order(
    tmp_path: Path, emu: RunningEmulator, fake_clock: FakeClock
) -> None:
    emu.config.batch_delay_s = 0
    reference = tmp_path / "reference"
    reference.mkdir()
    emu.config.batch_shuffle = False
    run_batch(write_job(reference, 500, "{mode: batch, batch_items: 5}"), emu, fake_clock)
    expected = pl.read_parquet(reference / "out/result.parquet").sort("doc_id")
    for shape in ("echo", "null", "omit"):
        folder = tmp_path / shape
        folder.mkdir()
        emu.config.batch_shuffle, emu.config.batch_reference = True, shape
        emu.config.batch_nested_result = shape == "omit"
        report, _ = run_batch(
            write_job(folder, 500, "{mode: batch, batch_items: 5}"), emu, fake_clock
        )
        assert report.rows_done == 500, (shape, report.message)
        got = pl.read_parquet(folder / "out/result.parquet").sort("doc_id")
        assert got["embedding"].to_list() == expected["embedding"].to_list(), shape


def test_items_that_fail_for_now_go_into_later_payloads_then_fail_as_retryable(
    tmp_path: Path, emu: RunningEmulator, fake_clock: FakeClock
) -> None:
    emu.config.batch_delay_s = 30
    emu.config.batch_item_failure_rate = 0.3
    job = write_job(tmp_path, 1_000, "{mode: batch, batch_items: 4, max_attempts: 8}")
    report, provider = run_batch(job, emu, fake_clock)
    assert report.stop_reason is StopReason.DONE, report.message
    assert output_keys(tmp_path) == list(range(1_000))
    assert provider.submits > 3  # the failed items went again, in payloads of their own
    assert emu.stats()["models"][BGE]["items"] == 1_000  # failed items were not billed
    # with two tries only, some rows fail: retryable, and the next run sends exactly them
    emu.reset()
    folder = tmp_path / "again"
    folder.mkdir()
    emu.config.batch_item_failure_rate = 0.5
    job = write_job(folder, 1_000, "{mode: batch, batch_items: 4, max_attempts: 2}")
    report, _ = run_batch(job, emu, fake_clock)
    assert report.stop_reason is StopReason.ROWS_FAILED
    failures = pl.read_parquet(folder / "out/result.failures.parquet")
    assert failures["retryable"].all() and set(failures["code"]) == {3007}
    assert set(failures["attempts"]) == {2}
    emu.config.batch_item_failure_rate = 0
    again, _ = run_batch(job, emu, fake_clock)
    assert again.rows_done == failures.height and again.stop_reason is StopReason.DONE
    assert output_keys(folder) == list(range(1_000))


def test_a_bad_text_inside_a_packed_request_fails_alone(
    tmp_path: Path, emu: RunningEmulator, fake_clock: FakeClock
) -> None:
    emu.config.batch_delay_s = 5
    job = write_job(tmp_path, 300, "{mode: batch, batch_items: 2}")

    def spoil(_: Watched, requests: list[dict[str, Any]]) -> None:
        # the emulator refuses an empty text (400 / 5006): that item fails inside its batch
        for item in requests:
            if any(text.endswith("#137") for text in item["text"]):
                item["text"] = ["" if t.endswith("#137") else t for t in item["text"]]

    report, provider = run_batch(
        job, emu, fake_clock, prepare=lambda _r, p: setattr(p, "on_submit", spoil)
    )
    assert report.stop_reason is StopReason.ROWS_FAILED
    assert report.rows_done == 299 and report.rows_failed == 1
    failures = pl.read_parquet(tmp_path / "out/result.failures.parquet")
    assert failures["_key"].to_list() == ["137"] and failures["code"].to_list() == [5006]
    assert not failures["retryable"][0]
    assert provider.submits <= 2 + 2 * 7  # halves down to one row: about log2(100) rounds


def test_a_3036_inside_a_batch_stops_submitting_and_the_next_day_goes_on(
    tmp_path: Path, emu: RunningEmulator, fake_clock: FakeClock
) -> None:
    emu.config.batch_delay_s = 0
    emu.config.daily_neurons = 1.0  # Cloudflare's cap, far below our ledger's
    # one payload every 10 s: the first is collected before the next one goes
    job = write_job(tmp_path, 1_000, "{mode: batch, batch_items: 1, requests_per_minute: 6}")
    report, provider = run_batch(job, emu, fake_clock)
    assert report.stop_reason is StopReason.DAY_CAP and report.exit_code == 3
    assert provider.submits < 10  # stopped submitting after the 3036
    done = report.rows_done
    assert 0 < done < 1_000
    assert not (tmp_path / "out/result.failures.parquet").exists()  # rows stay pending
    with Ledger(tmp_path / "ledger.sqlite3", account="emu", day_fn=emu.day) as ledger:
        assert ledger.today().marked  # the day is parked, as in sync mode
        assert ledger.open_holds() == []
    emu.config.daily_neurons = 1e6
    emu.advance_day()
    again, _ = run_batch(job, emu, fake_clock)
    assert again.stop_reason is StopReason.DONE and again.rows_done == 1_000 - done
    assert output_keys(tmp_path) == list(range(1_000))


def interrupt_at_first_poll(runner: Runner, provider: Watched) -> None:
    """Ctrl-C the run the moment it first polls (right after its first payload went)."""
    provider.on_poll = lambda _: runner.stopper.signal()


def test_batches_in_flight_at_ctrl_c_are_collected_by_the_next_run_not_sent_again(
    tmp_path: Path, emu: RunningEmulator, fake_clock: FakeClock
) -> None:
    emu.config.batch_delay_s = 3600
    job = write_job(tmp_path, 1_000, "{mode: batch, batch_items: 3}")
    first, provider = run_batch(job, emu, fake_clock, prepare=interrupt_at_first_poll)
    assert first.stop_reason is StopReason.INTERRUPTED and first.exit_code == 130
    assert first.batches_submitted == provider.submits == first.batches_in_flight == 1
    assert first.rows_done == 0 and first.rows_in_flight == 300  # 3 requests of 100 texts
    assert "1 batch (300 rows) still in flight" in first.message
    book = sqlite3.connect(work(tmp_path) / BOOK_FILE)
    ids = [r[0] for r in book.execute("SELECT request_id FROM batches")]
    book.close()
    assert len(ids) == first.batches_in_flight and all(ids)
    with Ledger(tmp_path / "ledger.sqlite3", account="emu", day_fn=emu.day) as ledger:
        held = ledger.open_holds()  # the process that held them is gone: they stay
        assert len(held) == len(ids) and ledger.today().reserved == sum(h.neurons for h in held)
    fake_clock.advance(3600)
    second, again = run_batch(job, emu, fake_clock)
    assert second.stop_reason is StopReason.DONE
    assert again.submits == 3  # the 7 requests never submitted; the 3 in flight are polled
    assert second.batches_collected == 4
    assert output_keys(tmp_path) == list(range(1_000))
    assert emu.stats()["models"][BGE]["items"] == 1_000  # nothing was paid twice
    with Ledger(tmp_path / "ledger.sqlite3", account="emu", day_fn=emu.day) as ledger:
        assert ledger.open_holds() == [] and ledger.today().reserved == 0


def test_a_batch_cloudflare_forgot_counts_as_spent_and_its_rows_go_again(
    tmp_path: Path, emu: RunningEmulator, fake_clock: FakeClock
) -> None:
    emu.config.batch_delay_s = 60
    job = write_job(tmp_path, 400, "{mode: batch, batch_items: 2}")
    first, _ = run_batch(job, emu, fake_clock, prepare=interrupt_at_first_poll)
    assert first.batches_in_flight >= 1
    emu.reset()  # the emulator forgets every batch (as a restarted one would)
    second, provider = run_batch(job, emu, fake_clock)
    assert second.stop_reason is StopReason.DONE
    # the rows never submitted (2 requests) and those of the lost payload, sent again
    assert first.batches_in_flight == 1 and provider.submits == 2
    assert output_keys(tmp_path) == list(range(400))
    with Ledger(tmp_path / "ledger.sqlite3", account="emu", day_fn=emu.day) as ledger:
        billed = emu.stats()["models"][BGE]["neurons"]
        # the lost payloads count at their worst case, on top of what was billed
        assert ledger.today().committed > billed


def test_fresh_settles_the_batches_in_flight_and_starts_over(
    tmp_path: Path, emu: RunningEmulator, fake_clock: FakeClock
) -> None:
    from pipelines.run.settings import RunSettings

    emu.config.batch_delay_s = 60
    job = write_job(tmp_path, 300, "{mode: batch, batch_items: 1}")
    first, _ = run_batch(job, emu, fake_clock, prepare=interrupt_at_first_poll)
    assert first.batches_in_flight >= 1
    fresh, provider = run_batch(job, emu, fake_clock, settings=RunSettings(fresh=True))
    assert fresh.stop_reason is StopReason.DONE and provider.submits == 3
    assert output_keys(tmp_path) == list(range(300))
    with Ledger(tmp_path / "ledger.sqlite3", account="emu", day_fn=emu.day) as ledger:
        assert ledger.open_holds() == []


def test_the_budget_holds_the_worst_case_and_is_never_passed(
    tmp_path: Path, emu: RunningEmulator, fake_clock: FakeClock
) -> None:
    emu.config.batch_delay_s = 10
    job = write_job(tmp_path, 3_000, "{mode: batch, batch_items: 3}")
    report, _ = run_batch(job, emu, fake_clock, cap=20.0)
    assert report.stop_reason is StopReason.DAY_CAP
    assert 0 < report.rows_done < 3_000
    with Ledger(tmp_path / "ledger.sqlite3", account="emu", day_fn=emu.day) as ledger:
        today = ledger.today()
        assert today.committed <= 20.0 and today.reserved == 0
    assert emu.stats()["models"][BGE]["neurons"] <= 20.0


def test_a_poll_refused_with_retry_after_waits_at_least_that_long(
    tmp_path: Path, emu: RunningEmulator, fake_clock: FakeClock
) -> None:
    from pipelines.core.errors import RateLimited, ServerError

    emu.config.batch_delay_s = 0
    refusals = [RateLimited("slow down", status=429, code=3021, retry_after=120), ServerError("x")]
    polled: list[float] = []

    def refuse(_: Watched) -> None:
        polled.append(fake_clock.monotonic())
        if refusals:
            raise refusals.pop(0)

    job = write_job(tmp_path, 100)
    report, provider = run_batch(
        job, emu, fake_clock, prepare=lambda _r, p: setattr(p, "on_poll", refuse)
    )
    assert report.stop_reason is StopReason.DONE and report.rows_done == 100
    assert provider.polls == 3
    assert polled[1] - polled[0] >= 120 - 1e-6  # the server's Retry-After, not the 2 s back-off
    assert polled[2] - polled[1] >= 4  # a 5xx: the back-off goes on


def test_max_neurons_caps_what_a_run_holds_and_the_next_run_goes_on(
    tmp_path: Path, emu: RunningEmulator, fake_clock: FakeClock
) -> None:
    from pipelines.run.settings import RunSettings

    emu.config.batch_delay_s = 10
    job = write_job(tmp_path, 2_000, "{mode: batch, batch_items: 2}")
    report, _ = run_batch(job, emu, fake_clock, settings=RunSettings(max_neurons=10))
    assert report.stop_reason is StopReason.RUN_CAP and report.exit_code == 3
    assert 0 < report.rows_done < 2_000 and report.neurons <= 10
    again, _ = run_batch(job, emu, fake_clock)
    assert again.stop_reason is StopReason.DONE
    assert output_keys(tmp_path) == list(range(2_000))
