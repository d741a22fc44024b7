"""The content-addressed result cache: a text another job (or run) already paid for is
answered from the cache, across jobs, with no request and no neurons."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from click.testing import CliRunner

from pipelines.cli import main
from pipelines.emulator.server import RunningEmulator
from pipelines.run.cache import ResultCache, decode_rows, encode_row, item_key, scope_of
from pipelines.run.settings import RunSettings

BGE = "@cf/baai/bge-small-en-v1.5"


@pytest.fixture
def emu(emu: RunningEmulator, env: dict[str, str]) -> RunningEmulator:
    """The shared emulator, with the environment pointing at it."""
    return emu


def job(tmp: Path, name: str, first: int, last: int) -> Path:
    pl.DataFrame(
        {
            "id": [f"{name}{i}" for i in range(first, last)],
            "text": [f"shared text {i}" for i in range(first, last)],
        }
    ).write_csv(tmp / f"{name}.csv")
    path = tmp / f"{name}.yaml"
    path.write_text(
        f"""name: {name}
source: {{kind: csv, path: {name}.csv, key: id}}
task: {{kind: embed, model: "{BGE}", input: text}}
output: {{path: out/{name}.parquet}}
"""
    )
    return path


def items_sent(emu: RunningEmulator) -> int:
    return int(emu.stats()["models"].get(BGE, {}).get("items", 0))


def test_a_job_whose_texts_repeat_another_jobs_bills_nothing_for_them(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["run", "--no-progress", str(job(tmp_path, "a", 0, 100))])
    assert first.exit_code == 0, first.output
    assert items_sent(emu) == 100
    billed = emu.stats()["neurons_today"]
    second = runner.invoke(main, ["run", "--no-progress", str(job(tmp_path, "b", 50, 150))])
    assert second.exit_code == 0, second.output
    assert items_sent(emu) == 150  # only texts 100..149 were new
    assert "(50 from cache)" in second.output
    a = pl.read_parquet(tmp_path / "out/a.parquet")
    b = pl.read_parquet(tmp_path / "out/b.parquet")
    assert b.height == 100
    # the cached vectors are the very ones job a was given
    va = dict(zip(a["_key"].to_list(), a["embedding"].to_list(), strict=True))
    vb = dict(zip(b["_key"].to_list(), b["embedding"].to_list(), strict=True))
    assert vb["b60"] == pytest.approx(va["a60"])
    assert emu.stats()["neurons_today"] > billed


def test_no_cache_sends_everything(tmp_path: Path, emu: RunningEmulator) -> None:
    runner = CliRunner()
    assert (
        runner.invoke(main, ["run", "--no-progress", str(job(tmp_path, "a", 0, 30))]).exit_code == 0
    )
    result = runner.invoke(
        main, ["run", "--no-progress", "--no-cache", str(job(tmp_path, "b", 0, 30))]
    )
    assert result.exit_code == 0, result.output
    assert items_sent(emu) == 60


def test_cache_round_trip_stats_and_prune(tmp_path: Path) -> None:
    scope = scope_of(produced_by=BGE, model=BGE, task="embed", params={})
    other = scope_of(produced_by=f"emulator:{BGE}", model=BGE, task="embed", params={})
    assert item_key(scope, ("x",)) != item_key(other, ("x",))  # rehearsals never leak
    batch = pa.RecordBatch.from_pydict({"label": ["POSITIVE"], "score": [0.9]})
    with ResultCache(tmp_path / "c.sqlite3") as cache:
        cache.put_many(scope, [(item_key(scope, ("x",)), encode_row(batch))])
        found = cache.get_many([item_key(scope, ("x",)), item_key(scope, ("y",))])
        assert list(found) == [item_key(scope, ("x",))]
        assert decode_rows(found.values()).to_pylist() == [{"label": "POSITIVE", "score": 0.9}]
        stats = cache.stats()
        assert stats["entries"] == 1 and stats["hits"] == 1
        assert cache.prune(max_bytes=0) == 1
        assert cache.stats()["entries"] == 0


def test_cache_cli(tmp_path: Path) -> None:
    os.environ["PIPELINES_STATE_DIR"] = str(tmp_path)
    runner = CliRunner()
    out = runner.invoke(main, ["cache", "stats", "--json"])
    assert out.exit_code == 0 and '"entries": 0' in out.output
    assert runner.invoke(main, ["cache", "prune"]).exit_code == 2
    assert "removed 0" in runner.invoke(main, ["cache", "prune", "--older-than-days", "30"]).output


def test_plan_shows_cache_hits_and_the_neurons_they_save(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    from pipelines.job.load import load_job
    from pipelines.run.plan import plan_job

    runner = CliRunner()
    assert (
        runner.invoke(main, ["run", "--no-progress", str(job(tmp_path, "a", 0, 100))]).exit_code
        == 0
    )
    b = load_job(job(tmp_path, "b", 50, 150))
    plan = plan_job(b, produced_by=f"emulator:{BGE}")  # the server said it is the emulator
    assert plan.rows_cached == 50
    assert plan.neurons_saved_by_cache > 0
    uncached = plan_job(b, RunSettings(use_cache=False), produced_by=f"emulator:{BGE}")
    assert uncached.neurons == pytest.approx(plan.neurons + plan.neurons_saved_by_cache)
    # plan makes no request, so it cannot ask the base URL's server who it is: told that it is
    # the emulator, it counts the emulator's answers; as Cloudflare it counts none of them
    out = runner.invoke(main, ["plan", "--provider", "emulator", str(tmp_path / "b.yaml")])
    assert "50 rows answered from the cache" in out.output
    out = runner.invoke(main, ["plan", "--provider", "cloudflare", str(tmp_path / "b.yaml")])
    assert "from the cache" not in out.output
