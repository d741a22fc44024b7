"""Issue 17: ``--shard I/N``. Every row belongs to exactly one shard (a stable hash of its
key); the shards' parts, ``<output>/part-I-of-N.parquet``, are one table to pyarrow, polars
and DuckDB, equal to what one unsharded run writes; a shard re-run resumes (nothing is sent
twice); ``plan`` counts one shard; ``status`` sums the parts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from pipelines.core.errors import JobError
from pipelines.core.shard import Shard, part_of
from pipelines.emulator.server import RunningEmulator

pytestmark = pytest.mark.emulator(rpm_scale=100)
ROWS = 120


def corpus(path: Path, rows: int = ROWS) -> None:
    texts = [f"row {i} about {'rivers' if i % 2 else 'cities'} and data" for i in range(rows)]
    pl.DataFrame({"doc_id": [f"d{i}" for i in range(rows)], "text": texts}).write_csv(path)


def job_file(folder: Path, name: str = "sharded") -> Path:
    corpus(folder / "in.csv")
    path = folder / f"{name}.yaml"
    path.write_text(
        f"name: {name}\n"
        "source: {kind: csv, path: in.csv, key: doc_id}\n"
        'task: {kind: embed, model: "@cf/baai/bge-small-en-v1.5", input: text}\n'
        f"output: {{path: out/{name}.parquet, keep: [doc_id]}}\n"
        "limits: {requests_per_minute: 100000, concurrency: 4}\n"
    )
    return path


def cli(emu: RunningEmulator, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CLOUDFLARE_ACCOUNT_ID": "shards",
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


def test_shard_specs() -> None:
    assert Shard.parse("1/4") == Shard(1, 4) and Shard.parse(" 0 / 1 ") == Shard(0, 1)
    for bad in ("4/4", "a/b", "1", "-1/4", "1/0"):
        with pytest.raises(JobError):
            Shard.parse(bad)
    assert part_of("part-2-of-4.parquet") == Shard(2, 4)
    assert part_of("part-4-of-4.parquet") is None and part_of("x.parquet") is None
    digests = np.random.default_rng(1).integers(0, 2**63, size=(1000, 2), dtype=np.uint64)
    masks = [Shard(i, 4).mask(digests) for i in range(4)]
    assert (sum(m.astype(int) for m in masks) == 1).all()  # each row in exactly one shard


def test_shards_make_one_table_equal_to_one_run(tmp_path: Path, emu: RunningEmulator) -> None:
    job = job_file(tmp_path)
    whole = tmp_path / "whole"
    whole.mkdir()
    single = job_file(whole)
    assert cli(emu, "run", "--no-progress", str(single)).returncode == 0

    planned = 0
    for i in range(4):
        plan = cli(emu, "plan", "--json", "--shard", f"{i}/4", str(job))
        assert plan.returncode == 0, plan.stderr
        planned += json.loads(plan.stdout)["rows_pending"]
        done = cli(emu, "run", "--no-progress", "--shard", f"{i}/4", str(job))
        assert done.returncode == 0, done.stderr
    assert planned == ROWS  # the shards' plans add up to the input

    dataset = tmp_path / "out" / "sharded.parquet"
    assert sorted(p.name for p in dataset.glob("*.parquet")) == [
        f"part-{i}-of-4.parquet" for i in range(4)
    ]
    expected = pl.read_parquet(whole / "out" / "sharded.parquet").sort("doc_id")
    by_arrow = pl.from_arrow(pq.read_table(dataset)).sort("doc_id")  # type: ignore[union-attr]
    by_polars = pl.read_parquet(dataset / "*.parquet").sort("doc_id")
    con = duckdb.connect()
    rows, keys, most = con.execute(
        "SELECT count(*), count(DISTINCT doc_id), max(n) FROM (SELECT doc_id, count(*) "
        f"OVER (PARTITION BY doc_id) AS n FROM read_parquet('{dataset}/*.parquet'))"
    ).fetchone() or (0, 0, 0)
    assert (rows, keys, most) == (ROWS, ROWS, 1)
    for table in (by_arrow, by_polars):
        assert table.height == ROWS and table["doc_id"].n_unique() == ROWS
        assert table.select(expected.columns).equals(expected)

    # a shard run again sends nothing: every row of it is done
    before = emu.stats()["requests_total"]
    again = cli(emu, "run", "--no-progress", "--shard", "2/4", str(job))
    assert again.returncode == 0 and emu.stats()["requests_total"] == before

    status = cli(emu, "status", "--json", str(job))
    assert status.returncode == 0, status.stderr
    # the parts of 4 shards and of 2 in one folder would hold some rows twice
    other = cli(emu, "run", "--no-progress", "--shard", "0/2", str(job))
    assert other.returncode == 2 and other.stderr.startswith("error: ")
    assert "part of 4 shards" in other.stderr and "Traceback" not in other.stderr
    seen = json.loads(status.stdout)["jobs"][0]
    assert seen["rows_done"] == ROWS and seen["rows_pending"] == 0
    assert seen["shards"] == ["0/4", "1/4", "2/4", "3/4"]
    assert seen["last_run_status"] == "done"


def test_a_bad_shard_is_one_error_line(tmp_path: Path, emu: RunningEmulator) -> None:
    done = cli(emu, "run", "--no-progress", "--shard", "4/4", str(job_file(tmp_path)))
    assert done.returncode == 2
    assert done.stderr.startswith("error: --shard 4/4") and "Traceback" not in done.stderr
