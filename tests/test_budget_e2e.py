"""Issue 4's proof, through the CLI against the emulator: a job that needs about three
days of neurons uses each day to the brim without ever provoking a 3036, resumes after
the emulated midnight, and ends with every row exactly once; two jobs started together
on one ledger stay under the cap together."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from pipelines.emulator.server import RunningEmulator

LARGE = "@cf/baai/bge-large-en-v1.5"  # 18,582 neurons per M tokens: a day is ~538k tokens
WORDS = (
    "budget neuron river city data model cloud worker night batch parquet token "
    "vector market garden winter ocean music light stone"
).split()


pytestmark = pytest.mark.emulator(daily_neurons=10_000, rpm_scale=100)


def corpus(path: Path, rows: int, words: int = 90, salt: str = "") -> None:
    texts = [
        " ".join(WORDS[(i * 7 + k * k) % len(WORDS)] for k in range(words)) + f" {salt}{i}"
        for i in range(rows)
    ]
    pl.DataFrame({"doc_id": [f"{salt}{i}" for i in range(rows)], "text": texts}).write_csv(path)


def job_file(folder: Path, name: str, data: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        f"""name: {name}
source: {{kind: csv, path: {data}, key: doc_id}}
task: {{kind: embed, model: "{LARGE}", input: text}}
output: {{path: out/{name}.parquet, keep: [doc_id]}}
limits: {{requests_per_minute: 100000, concurrency: 8}}
"""
    )
    return path


def cli(emu: RunningEmulator, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CLOUDFLARE_ACCOUNT_ID": "budget-proof",
        "CLOUDFLARE_API_TOKEN": "t0ken",
        "CLOUDFLARE_API_BASE_URL": emu.base_url,
    }
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_three_days_of_work_fill_each_day_and_finish_exactly_once(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    corpus(tmp_path / "big.csv", 15_000)
    job = job_file(tmp_path, "big", "big.csv")
    plan = cli(emu, "plan", "--json", str(job))
    assert plan.returncode == 0, plan.stderr
    assert 25_000 < float(__import__("json").loads(plan.stdout)["neurons"]) < 35_000

    billed_per_day = []
    for _day in range(5):
        result = cli(emu, "run", "--no-progress", str(job))
        stats = emu.stats()
        billed_per_day.append(stats["neurons_today"])
        assert "3036" not in stats["error_codes"] and "4006" not in stats["error_codes"]
        assert stats["neurons_today"] <= 10_000
        if result.returncode == 0:
            break
        assert result.returncode == 3, result.stderr
        assert "daily neuron cap reached" in result.stderr
        assert "resumes after 00:00 UTC" in result.stderr
        assert stats["neurons_today"] >= 9_800, billed_per_day  # the day used to the brim
        emu.advance_day()
    assert len(billed_per_day) in (3, 4), billed_per_day
    frame = pl.read_parquet(tmp_path / "out/big.parquet")
    assert frame.height == 15_000 and frame["doc_id"].n_unique() == 15_000
    sent = emu.stats()["models"][LARGE]["items"]
    assert sent == 15_000  # nothing paid twice


@pytest.mark.slow
def test_two_jobs_started_together_share_one_cap(tmp_path: Path, emu: RunningEmulator) -> None:
    corpus(tmp_path / "a.csv", 6_000, salt="a")
    corpus(tmp_path / "b.csv", 6_000, salt="b")
    env = {
        **os.environ,
        "CLOUDFLARE_ACCOUNT_ID": "budget-proof",
        "CLOUDFLARE_API_TOKEN": "t0ken",
        "CLOUDFLARE_API_BASE_URL": emu.base_url,
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pipelines", "run", "--no-progress", str(job)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for job in (job_file(tmp_path, "a", "a.csv"), job_file(tmp_path, "b", "b.csv"))
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    assert codes == [3, 3], outputs
    stats = emu.stats()
    assert stats["neurons_today"] <= 10_000
    assert stats["neurons_today"] >= 9_700
    assert "3036" not in stats["error_codes"]
