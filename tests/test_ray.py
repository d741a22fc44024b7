"""Issue 17: ``pipelines run JOB --ray`` places the shards of a job as Ray tasks on a Ray
started for the run, against the shared PostgreSQL ledger; its output is the same table as
one unsharded run's."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from pipelines.emulator.server import RunningEmulator

pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.emulator(rpm_scale=100)]
ROWS = 90


def job_file(folder: Path) -> Path:
    texts = [f"row {i} about {'rivers' if i % 3 else 'cities'}" for i in range(ROWS)]
    pl.DataFrame({"doc_id": [f"d{i}" for i in range(ROWS)], "text": texts}).write_csv(
        folder / "in.csv"
    )
    path = folder / "rayjob.yaml"
    path.write_text(
        "name: rayjob\n"
        "source: {kind: csv, path: in.csv, key: doc_id}\n"
        'task: {kind: embed, model: "@cf/baai/bge-small-en-v1.5", input: text}\n'
        "output: {path: out/rayjob.parquet, keep: [doc_id]}\n"
        "limits: {concurrency: 2, batch_size: 5}\n"
    )
    return path


def cli(
    emu: RunningEmulator, state: Path, *args: str, ledger: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CLOUDFLARE_ACCOUNT_ID": "ray",
        "CLOUDFLARE_API_TOKEN": "t0ken",
        "CLOUDFLARE_API_BASE_URL": emu.base_url,
        "PIPELINES_STATE_DIR": str(state),  # no result cache shared with the other run
        **({"PIPELINES_LEDGER_URL": ledger} if ledger else {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )


def test_the_same_job_through_ray_gives_the_same_output(
    tmp_path: Path, emu: RunningEmulator, pg_url: str
) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "ray").mkdir()
    single = cli(emu, tmp_path / "s1", "run", "--no-progress", str(job_file(tmp_path / "one")))
    assert single.returncode == 0, single.stderr
    job = job_file(tmp_path / "ray")
    args = ("run", "--no-progress", str(job), "--ray", "--shards", "3")
    done = cli(emu, tmp_path / "s2", *args, ledger=pg_url)  # the shards share one ledger
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("rayjob: done") == 3, done.stdout  # one line a shard
    dataset = tmp_path / "ray" / "out" / "rayjob.parquet"
    assert sorted(p.name for p in dataset.glob("*.parquet")) == [
        f"part-{i}-of-3.parquet" for i in range(3)
    ]
    expected = pl.read_parquet(tmp_path / "one" / "out" / "rayjob.parquet").sort("doc_id")
    got = pl.read_parquet(dataset / "*.parquet").sort("doc_id")
    assert got.select(expected.columns).equals(expected)
    assert "t0ken" not in done.stdout + done.stderr
    import psycopg

    with psycopg.connect(pg_url) as conn:  # the shards' requests were counted there
        row = conn.execute("SELECT sum(requests) FROM usage WHERE job = 'rayjob'").fetchone()
    # batches of 5 rows, each shard's last one maybe short
    assert row is not None and ROWS // 5 <= row[0] <= ROWS // 5 + 3


def test_ray_with_shard_is_one_error_line(tmp_path: Path, emu: RunningEmulator) -> None:
    job = job_file(tmp_path)
    done = cli(emu, tmp_path / "s", "run", str(job), "--ray", "--shard", "0/2")
    assert done.returncode == 2 and done.stderr.startswith("error: --ray runs every shard")


def _shard_workers() -> list[int]:
    """Ray worker processes running a shard now (Ray titles them ``ray::_run_shard``)."""
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True)
    return [
        int(line.split(None, 1)[0])
        for line in ps.stdout.splitlines()
        if line.split(None, 1)[1:] and line.split(None, 1)[1].startswith("ray::_run_shard")
    ]


def test_ray_starts_a_killed_shard_again_and_it_resumes(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    rows = 60
    job = job_file(tmp_path)
    pl.DataFrame(
        {"doc_id": [f"k{i}" for i in range(rows)], "text": [f"text {i}" for i in range(rows)]}
    ).write_csv(tmp_path / "in.csv")
    # one row a request at 240 a minute: the run lasts long enough to be hit
    job.write_text(
        job.read_text().replace(
            "limits: {concurrency: 2, batch_size: 5}",
            "limits: {concurrency: 2, batch_size: 1, requests_per_minute: 240}",
        )
    )
    env = {
        **os.environ,
        "CLOUDFLARE_ACCOUNT_ID": "ray-kill",
        "CLOUDFLARE_API_TOKEN": "t0ken",
        "CLOUDFLARE_API_BASE_URL": emu.base_url,
        "PIPELINES_STATE_DIR": str(tmp_path / "state"),
    }
    before = emu.stats()["requests_total"]
    command = [sys.executable, "-m", "pipelines", "run", "--no-progress", str(job)]
    run = subprocess.Popen(
        [*command, "--ray", "--shards", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed = None
    try:
        while run.poll() is None and killed is None:
            workers = _shard_workers()
            if workers and emu.stats()["requests_total"] >= before + 10:
                os.kill(workers[0], 9)
                killed = workers[0]
            else:  # polling the processes: nothing to inject a clock into
                time.sleep(0.1)
        _, err = run.communicate(timeout=400)
    finally:
        if run.poll() is None:
            run.kill()
    assert killed is not None, "no shard was running to be killed"
    assert run.returncode == 0, err
    frame = pl.read_parquet(tmp_path / "out" / "rayjob.parquet" / "*.parquet")
    assert frame.height == rows and frame["doc_id"].n_unique() == rows


def test_a_local_job_through_ray_infers_on_actors_with_the_same_answers(
    tmp_path: Path,
) -> None:
    pytest.importorskip("sentence_transformers")
    (tmp_path / "one").mkdir()
    (tmp_path / "ray").mkdir()
    env = {**os.environ, "PIPELINES_STATE_DIR": str(tmp_path / "state")}

    def run(folder: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "pipelines", "run", "--no-progress", "--no-cache"]
        return subprocess.run(
            [*command, "--provider", "local", str(job_file(folder)), *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )

    single = run(tmp_path / "one")
    assert single.returncode == 0, single.stderr
    done = run(tmp_path / "ray", "--ray", "--shards", "2")
    assert done.returncode == 0, done.stderr
    expected = pl.read_parquet(tmp_path / "one" / "out" / "rayjob.parquet").sort("doc_id")
    got = pl.read_parquet(tmp_path / "ray" / "out" / "rayjob.parquet" / "*.parquet")
    got = got.sort("doc_id").select(expected.columns)
    assert got["doc_id"].to_list() == expected["doc_id"].to_list()
    for a, b in zip(got["embedding"].to_list(), expected["embedding"].to_list(), strict=True):
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-4


def test_the_ray_local_provider_sends_inference_to_its_actors_in_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    from pipelines.catalog.models import get_model
    from pipelines.providers import local_ray

    asked: list[tuple[int, dict[str, object]]] = []

    class Method:
        def __init__(self, number: int) -> None:
            self.number = number

        def remote(self, model: object, inputs: dict[str, object]) -> object:
            asked.append((self.number, inputs))

            async def answer() -> dict[str, int]:
                return {"actor": self.number}

            return answer()

    class Actor:
        def __init__(self, number: int) -> None:
            self.infer = Method(number)

    provider = local_ray.RayLocalProvider([Actor(0), Actor(1)])
    monkeypatch.setattr(provider, "produced_by", lambda _model: "local:test")
    model = get_model("@cf/baai/bge-small-en-v1.5")

    async def go() -> list[object]:
        return [await provider.run(model, {"text": [str(i)]}) for i in range(3)]

    assert asyncio.run(go()) == [{"actor": 0}, {"actor": 1}, {"actor": 0}]
    assert [n for n, _ in asked] == [0, 1, 0]
