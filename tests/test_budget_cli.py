"""``pipelines budget``: text, JSON, history chart and --sync (with a fake analytics call)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pipelines.budget import Ledger, chart
from pipelines.budget.clock import reset_of, shift_day
from pipelines.cli import budget as budget_cli
from pipelines.cli import main
from pipelines.core.errors import JobError

TODAY = datetime.now(UTC).date().isoformat()


@pytest.fixture(autouse=True)
def _fixed_day(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # One day for the whole test, even if it runs across midnight; no user config file.
    monkeypatch.setattr("pipelines.budget.clock.utc_today", lambda: TODAY)
    monkeypatch.setenv("PIPELINES_CONFIG", str(tmp_path / "no-config.yaml"))


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["budget", *args])


def spend(account: str, job: str, model: str, neurons: float, *, day: str = TODAY) -> None:
    with Ledger(account=account, day_fn=lambda: day) as led:
        led.commit(led.reserve(job, model, neurons), neurons)


def test_text_shows_today_by_job_and_model() -> None:
    spend("acct1", "nightly", "@cf/baai/bge-m3", 1_234)
    spend("acct1", "nightly", "@cf/baai/bge-m3", 16)
    spend("acct1", "subtitles", "@cf/openai/whisper", 41.14)
    spend("other", "elsewhere", "@cf/baai/bge-m3", 5_000)
    with Ledger(account="acct1") as led:
        led.reserve("subtitles", "@cf/openai/whisper", 20)  # in flight (this process lives)
        result = run("--account", "acct1")
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"Neurons for account acct1 on {TODAY} (UTC)" in out
    assert "used       1,291.14" not in out  # figures over 100 are whole neurons
    assert "used       1,291" in out
    assert "reserved   20" in out
    assert "remaining  8,689 of 10,000" in out
    assert "available  8,689 for new requests" in out
    assert f"resets     {reset_of(TODAY):%Y-%m-%d} 00:00 UTC, in " in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("JOB"))
    assert lines[header].split() == ["JOB", "MODEL", "USED", "RESERVED", "REQUESTS"]
    assert lines[header + 1].split() == ["nightly", "@cf/baai/bge-m3", "1,250", "0", "2"]
    assert lines[header + 2].split() == ["subtitles", "@cf/openai/whisper", "41.14", "20", "1"]
    assert "elsewhere" not in out


def test_account_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    spend("envacct", "j", "m", 10)
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", "envacct")
    result = run("--json")
    data = json.loads(result.output)
    assert (data["account"], data["committed"]) == ("envacct", 10)


def test_json_has_the_same_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("budget: {daily_neurons: 5000, reserve: 1000}\n", encoding="utf-8")
    monkeypatch.setenv("PIPELINES_CONFIG", str(config))
    spend("default", "j", "m", 1_500)
    result = run("--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["day"] == TODAY
    assert (data["cap"], data["reserve"]) == (5_000, 1_000)
    assert (data["committed"], data["reserved"], data["remaining"]) == (1_500, 0, 3_500)
    assert data["available"] == 2_500
    assert data["exhausted"] is False
    assert data["resets_at"] == reset_of(TODAY).isoformat()
    assert 0 <= data["seconds_until_reset"] <= 86_400
    assert data["by_job_model"] == [
        {"job": "j", "model": "m", "committed": 1_500, "reserved": 0, "requests": 1}
    ]
    assert "history" not in data and "synced" not in data


def test_exhausted_day_is_reported() -> None:
    with Ledger() as led:
        led.mark_exhausted("429 / 3036: you have used up your daily free allocation")
    result = run()
    assert "stopped    Cloudflare: 429 / 3036" in result.output
    assert "available  0 for new requests" in result.output
    assert json.loads(run("--json").output)["exhausted"] is True


def test_history_chart() -> None:
    spend("default", "j", "m", 10_000, day=shift_day(TODAY, -2))
    spend("default", "j", "m", 2_500, day=shift_day(TODAY, -1))
    spend("default", "j", "m", 3, day=TODAY)
    result = run("--history", "--days", "4")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    start = lines.index("Last 4 days (UTC)")
    chart_lines = lines[start + 1 :]
    assert [line[:10] for line in chart_lines] == [shift_day(TODAY, d) for d in (-3, -2, -1, 0)]
    empty, full, quarter, tiny = chart_lines
    assert "█" * 30 in full and "10,000 / 10,000" in full and "exhausted" in full
    assert "███████▌" in quarter and "█" * 8 not in quarter and "25%" in quarter
    assert "█" not in empty and " 0 / 10,000" in empty
    assert "▏" in tiny and "3 / 10,000" in tiny


def test_days_alone_implies_history_and_json_carries_it() -> None:
    spend("default", "j", "m", 700, day=shift_day(TODAY, -1))
    data = json.loads(run("--json", "--days", "2").output)
    assert [d["day"] for d in data["history"]] == [shift_day(TODAY, -1), TODAY]
    assert [d["committed"] for d in data["history"]] == [700, 0]


def test_sync_records_the_accounts_usage(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []

    async def fake_fetch(day: str, account: str) -> dict[str, float]:
        calls.append((day, account))
        return {"@cf/baai/bge-m3": 300.0, "@cf/openai/whisper": 80.0}

    monkeypatch.setattr(budget_cli, "fetch_account_usage", fake_fetch)
    spend("acc9", "nightly", "@cf/baai/bge-m3", 250)
    result = run("--sync", "--account", "acc9", "--json")
    assert result.exit_code == 0, result.output
    assert calls == [(TODAY, "acc9")]
    data = json.loads(result.output)
    assert data["synced"] == {"@cf/baai/bge-m3": 300.0, "@cf/openai/whisper": 80.0}
    assert data["committed"] == 380  # max(ours, account's) per model
    outside = [r for r in data["by_job_model"] if r["job"] == "(outside pipelines)"]
    assert {r["model"]: r["committed"] for r in outside} == {
        "@cf/baai/bge-m3": 50,
        "@cf/openai/whisper": 80,
    }
    # Recorded: a later plain call still sees it.
    text = run("--account", "acc9").output
    assert "used       380" in text and "(outside pipelines)" in text


def test_sync_needs_an_account() -> None:
    result = run("--sync")
    assert result.exit_code == 2
    assert "error: --sync needs the account id" in result.output


def test_real_sync_needs_a_token() -> None:
    with pytest.raises(JobError, match="CLOUDFLARE_API_TOKEN"):
        asyncio.run(budget_cli.fetch_account_usage(TODAY, "acct"))


def test_bar_and_duration() -> None:
    assert chart.bar(0, 100, 10) == ""
    assert chart.bar(100, 100, 10) == "█" * 10
    assert chart.bar(500, 100, 10) == "█" * 10  # never past the width
    assert chart.bar(50, 100, 10) == "█" * 5
    assert chart.bar(5, 100, 10) == "▌"  # half a cell
    assert chart.bar(13, 100, 10) == "█▎"  # 1.3 cells ≈ 10 eighths
    assert chart.bar(0.001, 100, 10) == "▏"  # any use stays visible
    assert chart.bar(12.5, 100, 1) == "▏"
    assert chart.duration(5 * 3600 + 12 * 60 + 5) == "5h 12m"
    assert chart.duration(600) == "10m"
    assert chart.duration(-3) == "0s"


# -- issue 11: lifting Cloudflare's mark, and saying what today already spent ----------------


def test_clear_exhausted_lifts_cloudflares_mark() -> None:
    with Ledger(account="acct") as led:
        led.mark_exhausted("429 / 3036: used up")
    result = run("--account", "acct", "--clear-exhausted")
    assert result.exit_code == 0, result.output
    assert "lifted" in result.output
    data = json.loads(run("--account", "acct", "--json").output)
    assert (data["marked"], data["exhausted"], data["available"]) == (False, False, 10_000)
    again = run("--account", "acct", "--clear-exhausted")
    assert again.exit_code == 0 and "no mark" in again.output


def _fake_usage(monkeypatch: pytest.MonkeyPatch, usage: dict[str, float]) -> None:
    async def fake_fetch(day: str, account: str) -> dict[str, float]:
        return dict(usage)

    monkeypatch.setattr(budget_cli, "fetch_account_usage", fake_fetch)


def test_sync_lifts_the_mark_when_the_account_shows_room(monkeypatch: pytest.MonkeyPatch) -> None:
    with Ledger(account="acct") as led:
        led.mark_exhausted("429 / 3036: used up")
    _fake_usage(monkeypatch, {"@cf/baai/bge-m3": 120.0})
    result = run("--account", "acct", "--sync")
    assert result.exit_code == 0, result.output
    assert "lifted" in result.output and "stopped" not in result.output
    with Ledger(account="acct") as led:
        usage = led.today()
        assert not usage.marked and usage.committed == 120
        assert led.available() == 10_000 - 120


def test_sync_keeps_the_mark_when_the_account_shows_the_day_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with Ledger(account="acct") as led:
        led.mark_exhausted("429 / 3036: used up")
    _fake_usage(monkeypatch, {"@cf/baai/bge-m3": 10_000.0})
    result = run("--account", "acct", "--sync", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["marked"] is True


def test_a_new_ledger_is_known_after_sync_or_assume_unused(monkeypatch: pytest.MonkeyPatch) -> None:
    with Ledger(account="a") as led:
        assert not led.usage_known()
    data = json.loads(run("--account", "a", "--json").output)
    assert data["usage_known"] is False
    assert "--sync" in run("--account", "a").output  # the text says what to do
    _fake_usage(monkeypatch, {})
    assert run("--account", "a", "--sync").exit_code == 0
    assert json.loads(run("--account", "a", "--json").output)["usage_known"] is True
    result = run("--account", "b", "--assume-unused")
    assert result.exit_code == 0, result.output
    assert json.loads(run("--account", "b", "--json").output)["usage_known"] is True
