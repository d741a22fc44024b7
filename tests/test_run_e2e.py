"""End to end through the CLI against the emulator on loopback: each task, packing,
resume, incremental runs, budget stops, auth failures and kill -9 recovery."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipelines.cli import main

WORDS = "alpha beta gamma delta river mountain city market music garden ocean winter".split()


def write_corpus(path: Path, n: int, start: int = 0) -> None:
    rows = [
        {
            "doc_id": i,
            "title": f"doc {i}",
            "text": " ".join(WORDS[(i * k) % len(WORDS)] for k in range(1, 8)) + f" #{i}",
        }
        for i in range(start, start + n)
    ]
    frame = pl.DataFrame(rows)
    if path.exists():
        frame = pl.concat([pl.read_csv(path), frame])
    frame.write_csv(path)


def write_job(tmp: Path, kind: str = "embed", **extra: str) -> Path:
    models = {
        "embed": '"@cf/baai/bge-small-en-v1.5"',
        "classify": '"@cf/huggingface/distilbert-sst-2-int8"',
        "translate": '"@cf/meta/m2m100-1.2b"',
    }
    params = extra.get("params", "{}")
    text = f"""name: test-{kind}
source:
  kind: csv
  path: corpus.csv
  key: doc_id
task:
  kind: {kind}
  model: {models[kind]}
  input: text
  params: {params}
output:
  path: out/result.parquet
  keep: [doc_id, title]
{extra.get("tail", "")}
"""
    job = tmp / "job.yaml"
    job.write_text(text)
    return job


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["run", "--no-progress", *args])
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


def model_requests(emu: object, model: str) -> int:
    stats = emu.stats()  # type: ignore[attr-defined]
    return int(stats["models"].get(model, {}).get("requests", 0))


BGE = "@cf/baai/bge-small-en-v1.5"


def test_embed_packs_100_per_request_and_writes_fixed_size_float32(
    tmp_path: Path, env: dict[str, str], emu: object
) -> None:
    write_corpus(tmp_path / "corpus.csv", 250)
    code, out = run_cli(str(write_job(tmp_path)))
    assert code == 0, out
    assert model_requests(emu, BGE) == math.ceil(250 / 100)
    table = pq.read_table(tmp_path / "out/result.parquet")
    assert table.num_rows == 250
    emb_type = table.schema.field("embedding").type
    assert pa.types.is_fixed_size_list(emb_type) and emb_type.list_size == 384
    assert emb_type.value_type == pa.float32()
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    assert meta["pipelines.model"] == BGE
    assert meta["pipelines.run_ids"].startswith('["')
    frame = pl.from_arrow(table)
    assert sorted(int(d) for d in frame["doc_id"].to_list()) == list(range(250))  # CSV is text
    assert set(frame.columns) == {"_key", "_hash", "doc_id", "title", "embedding"}


def test_rerun_sends_nothing_and_appended_rows_only_are_sent(
    tmp_path: Path, env: dict[str, str], emu: object
) -> None:
    write_corpus(tmp_path / "corpus.csv", 120)
    job = str(write_job(tmp_path))
    assert run_cli(job)[0] == 0
    first = model_requests(emu, BGE)
    code, out = run_cli(job)
    assert code == 0, out
    assert model_requests(emu, BGE) == first  # nothing sent again
    assert "skipped 120" in out
    write_corpus(tmp_path / "corpus.csv", 30, start=120)
    assert run_cli(job)[0] == 0
    stats = emu.stats()  # type: ignore[attr-defined]
    assert stats["models"][BGE]["items"] == 150  # only the 30 new texts were sent
    frame = pl.read_parquet(tmp_path / "out/result.parquet")
    assert frame.height == 150 and frame["doc_id"].n_unique() == 150


def test_classify_and_translate(tmp_path: Path, env: dict[str, str]) -> None:
    pl.DataFrame(
        {
            "doc_id": [1, 2, 3],
            "title": ["a", "b", "c"],
            "text": [
                "I love this, it is wonderful and great",
                "terrible, awful, I hate it",
                "good",
            ],
        }
    ).write_csv(tmp_path / "corpus.csv")
    assert run_cli(str(write_job(tmp_path, "classify")))[0] == 0
    frame = pl.read_parquet(tmp_path / "out/result.parquet").sort("doc_id")
    assert frame["label"].to_list()[:2] == ["POSITIVE", "NEGATIVE"]
    assert all(0.0 <= s <= 1.0 for s in frame["score"].to_list())
    job = write_job(tmp_path, "translate", params="{target_lang: fr}")
    (tmp_path / "out/result.parquet").unlink()
    code, out = run_cli(str(job), "--fresh")
    assert code == 0, out
    frame = pl.read_parquet(tmp_path / "out/result.parquet")
    assert frame.height == 3 and all(t for t in frame["translated_text"].to_list())


def test_changed_params_need_fresh(tmp_path: Path, env: dict[str, str]) -> None:
    write_corpus(tmp_path / "corpus.csv", 10)
    assert run_cli(str(write_job(tmp_path)))[0] == 0
    job = write_job(tmp_path, params="{pooling: cls}")
    code, out = run_cli(str(job))
    assert code == 2 and "--fresh" in out
    code, out = run_cli(str(job), "--fresh")
    assert code == 0, out


def test_empty_rows_fail_without_sinking_neighbours(tmp_path: Path, env: dict[str, str]) -> None:
    pl.DataFrame(
        {"doc_id": [1, 2, 3, 4], "title": ["a"] * 4, "text": ["fine text", None, "  ", "ok"]}
    ).write_csv(tmp_path / "corpus.csv")
    code, out = run_cli(str(write_job(tmp_path)))
    assert code == 1, out
    done = pl.read_parquet(tmp_path / "out/result.parquet")
    failed = pl.read_parquet(tmp_path / "out/result.failures.parquet")
    assert sorted(done["doc_id"].to_list()) == ["1", "4"]
    assert sorted(failed["_key"].to_list()) == ["2", "3"]
    assert set(failed.columns) >= {"_key", "code", "message", "attempts"}


def test_max_neurons_stops_with_exit_3_and_resumes(tmp_path: Path, env: dict[str, str]) -> None:
    write_corpus(tmp_path / "corpus.csv", 400)
    job = str(write_job(tmp_path, tail="limits: {batch_size: 10}"))
    code, out = run_cli(job, "--max-neurons", "1")
    assert code == 3, out
    partial = pl.read_parquet(tmp_path / "out/result.parquet").height
    assert 0 < partial < 400
    code, out = run_cli(job)
    assert code == 0, out
    frame = pl.read_parquet(tmp_path / "out/result.parquet")
    assert frame.height == 400 and frame["doc_id"].n_unique() == 400


def test_daily_allocation_exhausted_stops_cleanly(
    tmp_path: Path, env: dict[str, str], emu: object
) -> None:
    write_corpus(tmp_path / "corpus.csv", 50)
    emu.config.daily_neurons = 0.0001  # type: ignore[attr-defined]
    try:
        code, out = run_cli(str(write_job(tmp_path, tail="limits: {batch_size: 5}")))
    finally:
        emu.config.daily_neurons = 10_000  # type: ignore[attr-defined]
    assert code == 3, out
    assert "daily" in out


def test_bad_token_aborts_at_once(
    tmp_path: Path, env: dict[str, str], emu: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_corpus(tmp_path / "corpus.csv", 300)
    emu.config.token = "the-right-one"  # type: ignore[attr-defined]
    try:
        code, out = run_cli(str(write_job(tmp_path)))
    finally:
        emu.config.token = None  # type: ignore[attr-defined]
    assert code == 2, out
    assert env["CLOUDFLARE_API_TOKEN"] not in out
    stats = emu.stats()  # type: ignore[attr-defined]
    assert stats["status_counts"].get("401", 0) <= 16  # not one per row


def items_sent(emu: object) -> int:
    return int(emu.stats()["models"].get(BGE, {}).get("items", 0))  # type: ignore[attr-defined]


@pytest.mark.slow
def test_kill_9_then_resume_gives_every_row_exactly_once(
    tmp_path: Path, env: dict[str, str], emu: object
) -> None:
    n = 3000
    write_corpus(tmp_path / "corpus.csv", n)
    job = str(write_job(tmp_path, tail="limits: {batch_size: 10, concurrency: 4}"))
    emu.config.latency_ms = 20  # type: ignore[attr-defined]
    try:
        for _ in range(3):
            sent = items_sent(emu)
            proc = subprocess.Popen(
                [sys.executable, "-m", "pipelines", "run", "--no-progress", job],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 60
            while proc.poll() is None and items_sent(emu) < sent + 200:  # mid-run, 20 requests in
                assert time.monotonic() < deadline
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    finally:
        emu.config.latency_ms = 0  # type: ignore[attr-defined]
    code, out = run_cli(job)
    assert code == 0, out
    frame = pl.read_parquet(tmp_path / "out/result.parquet")
    assert frame.height == n
    assert frame["doc_id"].n_unique() == n
    sent = emu.stats()["models"][BGE]["items"]  # type: ignore[attr-defined]
    # at most the requests in flight at each kill are paid twice
    assert sent <= n + 3 * 4 * 10
