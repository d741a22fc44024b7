"""More of issue 3 end to end: per-row languages, --retry-failed, Ctrl-C (exit 130,
resumable), and every example job in jobs/ running against the emulator."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from pipelines.cli import main
from pipelines.emulator.server import RunningEmulator

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.emulator(rpm_scale=100)


@pytest.fixture
def emu(emu: RunningEmulator, env: dict[str, str]) -> RunningEmulator:
    """The shared emulator, with the environment pointing at it."""
    return emu


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["run", "--no-progress", *args])
    return result.exit_code, result.output


def test_per_row_languages_are_checked_before_sending(tmp_path: Path, emu: RunningEmulator) -> None:
    pl.DataFrame(
        {
            "id": ["1", "2", "3", "4"],
            "text": ["hello world", "good morning", "thank you", "see you"],
            "src": ["en", "English", "en", "en"],
            "dst": ["fr", "German", "klingon", None],
        }
    ).write_csv(tmp_path / "p.csv")
    (tmp_path / "job.yaml").write_text(
        """name: langs
source: {kind: csv, path: p.csv, key: id}
task:
  kind: translate
  model: "@cf/meta/m2m100-1.2b"
  input: text
  source_lang_column: src
  target_lang_column: dst
output: {path: out.parquet, keep: [id, dst]}
"""
    )
    code, out = run(str(tmp_path / "job.yaml"))
    assert code == 1, out
    done = pl.read_parquet(tmp_path / "out.parquet").sort("id")
    assert done["id"].to_list() == ["1", "2"]
    failed = pl.read_parquet(tmp_path / "out.failures.parquet").sort("_key")
    assert failed["_key"].to_list() == ["3", "4"]
    assert "unknown language 'klingon'" in failed["message"][0]
    assert "no target lang" in failed["message"][1]
    # nothing was sent for the two bad rows
    assert emu.stats()["models"]["@cf/meta/m2m100-1.2b"]["requests"] == 2


def test_retry_failed_sends_permanent_failures_again(tmp_path: Path, emu: RunningEmulator) -> None:
    pl.DataFrame({"id": ["1", "2"], "text": ["fine", "x " * 600]}).write_csv(tmp_path / "in.csv")
    job = tmp_path / "job.yaml"
    job.write_text(
        """name: retry
source: {kind: csv, path: in.csv, key: id}
task: {kind: embed, model: "@cf/baai/bge-small-en-v1.5", input: text}
output: {path: out.parquet}
"""
    )
    assert run(str(job))[0] == 1  # row 2 is over 512 tokens
    assert run(str(job))[0] == 0  # a plain re-run sends nothing: no row failed in this run
    requests = emu.stats()["models"]["@cf/baai/bge-small-en-v1.5"]["requests"]
    assert requests == 1
    job.write_text(job.read_text().replace("input: text}", "input: text, truncate: true}"))
    code, out = run(str(job), "--fresh")
    assert code == 0, out
    frame = pl.read_parquet(tmp_path / "out.parquet")
    assert sorted(frame["_key"].to_list()) == ["1", "2"]


def test_ctrl_c_stops_cleanly_with_130_and_resumes(tmp_path: Path, emu: RunningEmulator) -> None:
    emu.config.latency_ms = 100
    pl.DataFrame(
        {"id": [str(i) for i in range(1500)], "text": [f"text {i}" for i in range(1500)]}
    ).write_csv(tmp_path / "in.csv")
    job = tmp_path / "job.yaml"
    job.write_text(
        """name: interrupt
source: {kind: csv, path: in.csv, key: id}
task: {kind: embed, model: "@cf/baai/bge-small-en-v1.5", input: text}
output: {path: out.parquet}
limits: {batch_size: 10, concurrency: 2}
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "run", "--no-progress", str(job)],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not list((tmp_path / ".out.parquet.pipelines").glob("results-*.arrow")) or (
        emu.stats()["models"].get("@cf/baai/bge-small-en-v1.5", {}).get("items", 0) < 100
    ):  # results are being journaled and some batches are done: mid-run
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    partial = pl.read_parquet(tmp_path / "out.parquet")
    assert 0 < partial.height < 1500
    emu.config.latency_ms = 0
    code, output = run(str(job))
    assert code == 0, output
    final = pl.read_parquet(tmp_path / "out.parquet")
    assert final.height == 1500 and final["_key"].n_unique() == 1500


@pytest.mark.parametrize("job_file", sorted((ROOT / "jobs").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_job_runs_against_the_emulator(
    job_file: Path, tmp_path: Path, emu: RunningEmulator
) -> None:
    raw = yaml.safe_load(job_file.read_text())
    raw["source"]["path"] = str((job_file.parent / raw["source"]["path"]).resolve())
    raw["output"]["path"] = str(tmp_path / "out" / Path(raw["output"]["path"]).name)
    if "images" in raw["output"]:  # an image job's folder of files goes there too
        raw["output"]["images"] = str(tmp_path / "out" / Path(raw["output"]["images"]).name)
    raw.setdefault("limits", {})["requests_per_minute"] = 100_000  # the emulator allows it
    copy = tmp_path / job_file.name
    copy.write_text(yaml.safe_dump(raw))
    validate = CliRunner().invoke(main, ["validate", str(job_file)])
    assert validate.exit_code == 0, validate.output
    code, out = run(str(copy))
    # the transcription sample ships a deliberately broken file: one failed row
    assert code == (1 if raw["task"]["kind"] == "transcribe" else 0), out
    assert (tmp_path / "out" / Path(raw["output"]["path"]).name).exists()
    shutil.rmtree(tmp_path / "out")


def test_provider_emulator_rehearses_without_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_TOKEN", "CLOUDFLARE_API_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    pl.DataFrame({"id": ["1", "2"], "text": ["a short text", "another one"]}).write_csv(
        tmp_path / "in.csv"
    )
    job = tmp_path / "job.yaml"
    job.write_text(
        """name: rehearsal
source: {kind: csv, path: in.csv, key: id}
task: {kind: embed, model: "@cf/baai/bge-small-en-v1.5", input: text}
output: {path: out.parquet}
"""
    )
    code, out = run("--provider", "emulator", str(job))
    assert code == 0, out
    metadata = pq.read_schema(tmp_path / "out.parquet").metadata or {}
    assert metadata[b"pipelines.produced_by"] == b"emulator:@cf/baai/bge-small-en-v1.5"
    # the rehearsal spent nothing from the account's ledger
    budget = json.loads(CliRunner().invoke(main, ["budget", "--json"]).output)
    assert budget["committed"] == 0 and budget["by_job_model"] == []
