"""Vectorize: the emulator's v2 API, the sink of embed jobs (exactly once, re-sent on change,
deleted on sync, bad vectors isolated), the load-time dimension check, and `pipelines
vectorize` create / info / query, all against the emulator on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core.errors import AuthenticationFailed
from pipelines.emulator.server import RunningEmulator
from pipelines.job.load import load_job
from pipelines.output import vectorize as sink
from pipelines.providers.base import ProviderSettings
from pipelines.providers.retry import RetryPolicy
from pipelines.providers.vectorize import VectorizeClient

SMALL = "@cf/baai/bge-small-en-v1.5"
BASE = "@cf/baai/bge-base-en-v1.5"
TOKEN = "vectorize-token-0123456789"


def name() -> str:
    return "idx-" + uuid.uuid4().hex[:10]


def cli(emu: RunningEmulator, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CLOUDFLARE_ACCOUNT_ID": "vec-acct",
        "CLOUDFLARE_API_TOKEN": TOKEN,
        "CLOUDFLARE_API_BASE_URL": emu.base_url,
        "PIPELINES_STATE_DIR": str(tmp / "state"),
    }
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def api(emu: RunningEmulator) -> httpx.Client:
    return httpx.Client(
        base_url=f"{emu.base_url}/accounts/vec-acct/vectorize/v2/indexes",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )


# ----------------------------------------------------------------------- the emulator


def test_the_emulator_speaks_vectorize_v2(emu: RunningEmulator) -> None:
    index = name()
    with api(emu) as c:
        made = c.post("", json={"name": index, "config": {"dimensions": 3, "metric": "cosine"}})
        assert made.status_code == 200 and made.json()["result"]["config"]["dimensions"] == 3
        assert (
            c.post(
                "", json={"name": index, "config": {"dimensions": 3, "metric": "cosine"}}
            ).status_code
            == 409
        )
        lines = [
            {"id": "a", "values": [1, 0, 0], "metadata": {"t": "x"}},
            {"id": "b", "values": [0, 1, 0], "metadata": {"t": "y"}, "namespace": "n1"},
            {"id": "c", "values": [1, 1, 0]},
        ]
        body = "\n".join(json.dumps(v) for v in lines).encode()
        up = c.post(
            f"/{index}/upsert", content=body, headers={"content-type": "application/x-ndjson"}
        )
        assert up.status_code == 200 and up.json()["result"]["mutationId"]
        q = c.post(
            f"/{index}/query", json={"vector": [1, 0.1, 0], "topK": 2, "returnMetadata": "all"}
        ).json()["result"]
        assert [m["id"] for m in q["matches"]] == ["a", "c"]
        assert q["matches"][0]["metadata"] == {"t": "x"}
        only = c.post(f"/{index}/query", json={"vector": [1, 0, 0], "namespace": "n1"}).json()
        assert [m["id"] for m in only["result"]["matches"]] == ["b"]
        got = c.post(f"/{index}/get_by_ids", json={"ids": ["b", "zz"]}).json()["result"]
        assert [g["id"] for g in got] == ["b"] and got[0]["values"] == [0, 1, 0]
        assert c.post(f"/{index}/delete_by_ids", json={"ids": ["a"]}).status_code == 200
        assert c.get(f"/{index}").json()["result"]["vectorCount"] == 2
        # limits: wrong width, too many vectors, a missing index, topK with metadata
        bad = c.post(f"/{index}/upsert", content=b'{"id": "d", "values": [1, 2]}')
        assert bad.status_code == 400 and c.get(f"/{index}").json()["result"]["vectorCount"] == 2
        many = "\n".join(json.dumps({"id": f"v{i}", "values": [1, 0, 0]}) for i in range(5001))
        assert c.post(f"/{index}/upsert", content=many.encode()).status_code == 400
        assert c.get("/no-such-index").status_code == 404
        too_many = {"vector": [1, 0, 0], "topK": 21, "returnMetadata": "all"}
        assert c.post(f"/{index}/query", json=too_many).status_code == 400


@pytest.mark.parametrize("metric", ["euclidean", "dot-product"])
def test_the_emulator_orders_by_metric(emu: RunningEmulator, metric: str) -> None:
    index = name()
    vectors = {"near": [1.0, 0.0], "long": [10.0, 1.0], "far": [-1.0, 0.0]}
    with api(emu) as c:
        c.post("", json={"name": index, "config": {"dimensions": 2, "metric": metric}})
        body = "\n".join(json.dumps({"id": k, "values": v}) for k, v in vectors.items())
        c.post(f"/{index}/upsert", content=body.encode())
        q = c.post(f"/{index}/query", json={"vector": [1, 0], "topK": 3}).json()["result"]
    ids = [m["id"] for m in q["matches"]]
    # euclidean: smallest distance first; dot product: largest product first
    assert ids == (["near", "far", "long"] if metric == "euclidean" else ["long", "near", "far"])


# ----------------------------------------------------------------------- jobs end to end


def write_job(tmp: Path, index: str, rows: dict[str, str], *, sync: bool = False) -> Path:
    lines = ["doc_id,title,text"] + [f"{k},title {k},{v}" for k, v in rows.items()]
    (tmp / "docs.csv").write_text("\n".join(lines) + "\n")
    job = tmp / "vec.yaml"
    job.write_text(
        "name: vec-job\nprovider: cloudflare\n"
        "source: {kind: csv, path: docs.csv, key: doc_id}\n"
        f'task: {{kind: embed, model: "{SMALL}", input: text}}\n'
        f"output: {{path: out/vec.parquet, keep: [doc_id, title], sync: {str(sync).lower()},\n"
        f"         vectorize: {{index: {index}, metadata: [title]}}}}\n"
    )
    return job


def sink_figures(tmp: Path) -> dict[str, Any]:
    manifest = json.loads((tmp / "out" / "vec.manifest.json").read_text())
    figures: dict[str, Any] = manifest["last_run"]["vectorize"]
    return figures


def brute_force(tmp: Path, query: np.ndarray, k: int) -> list[str]:
    table = pq.read_table(tmp / "out" / "vec.parquet", columns=["_key", "embedding"])
    matrix = np.asarray(table.column("embedding").to_pylist(), dtype=np.float64)
    sims = matrix @ query / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
    keys = table.column("_key").to_pylist()
    return [keys[i] for i in np.argsort(-sims, kind="stable")[:k]]


@pytest.mark.emulator(rpm_scale=100)
def test_an_embed_job_fills_its_index_once(tmp_path: Path, emu: RunningEmulator) -> None:
    index = name()
    made = cli(emu, tmp_path, "vectorize", "create", index, "--model", SMALL)
    assert made.returncode == 0, made.stderr
    assert "384 dimensions, cosine" in made.stdout
    rows = {f"d{i:02d}": f"document number {i} about topic {i % 7}" for i in range(40)}
    job = write_job(tmp_path, index, rows, sync=True)
    first = cli(emu, tmp_path, "run", "--no-progress", str(job))
    assert first.returncode == 0, first.stderr
    assert sink_figures(tmp_path)["upserted"] == 40
    info = cli(emu, tmp_path, "vectorize", "info", index, "--json")
    assert json.loads(info.stdout)["vectorCount"] == 40

    # the top-k of a query equals a brute-force search over the output Parquet
    table = pq.read_table(tmp_path / "out" / "vec.parquet")
    probe = np.asarray(table.column("embedding")[3].as_py(), dtype=np.float64)
    with api(emu) as c:
        got = c.post(
            f"/{index}/query",
            json={"vector": probe.tolist(), "topK": 10, "returnMetadata": "all"},
        ).json()["result"]["matches"]
    assert [m["id"] for m in got] == brute_force(tmp_path, probe, 10)
    assert got[0]["metadata"] == {"title": f"title {got[0]['id']}"}

    # nothing changed: nothing sent; one text changed: that vector alone
    again = cli(emu, tmp_path, "run", "--no-progress", str(job))
    assert again.returncode == 0 and sink_figures(tmp_path)["upserted"] == 0
    rows["d05"] = "a completely different text now"
    write_job(tmp_path, index, rows, sync=True)
    changed = cli(emu, tmp_path, "run", "--no-progress", str(job))
    assert changed.returncode == 0 and sink_figures(tmp_path)["upserted"] == 1
    # sync: rows that left the input leave the index
    for gone in ("d01", "d02"):
        del rows[gone]
    write_job(tmp_path, index, rows, sync=True)
    synced = cli(emu, tmp_path, "run", "--no-progress", str(job))
    assert synced.returncode == 0 and sink_figures(tmp_path)["deleted"] == 2
    with api(emu) as c:
        assert c.get(f"/{index}").json()["result"]["vectorCount"] == 38
        left = c.post(f"/{index}/get_by_ids", json={"ids": ["d01", "d03"]}).json()["result"]
    assert [v["id"] for v in left] == ["d03"]

    # query by text: embedded with the index's model, nearest first
    found = cli(emu, tmp_path, "vectorize", "query", index, rows["d05"], "--json")
    assert found.returncode == 0, found.stderr
    answer = json.loads(found.stdout)
    assert answer["model"] == SMALL and answer["matches"][0]["id"] == "d05"
    for result in (first, again, changed, synced, found, made, info):
        assert TOKEN not in result.stdout + result.stderr


@pytest.mark.emulator(rpm_scale=100)
def test_an_index_of_other_dimensions_stops_before_any_neuron(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    index = name()
    assert cli(emu, tmp_path, "vectorize", "create", index, "--model", BASE).returncode == 0
    before = emu.stats()["neurons_today"]
    job = write_job(tmp_path, index, {"a": "one", "b": "two"})
    done = cli(emu, tmp_path, "run", "--no-progress", str(job))
    assert done.returncode == 2, done.stderr
    assert "768 dimensions" in done.stderr and "Traceback" not in done.stderr
    assert emu.stats()["neurons_today"] == before
    missing = write_job(tmp_path, "no-such-index", {"a": "one"})
    gone = cli(emu, tmp_path, "run", "--no-progress", str(missing))
    assert gone.returncode == 2 and "no Vectorize index no-such-index" in gone.stderr


def test_vectorize_settings_are_checked_at_load(tmp_path: Path) -> None:
    job = write_job(tmp_path, "idx", {"a": "one"})
    job.write_text(job.read_text().replace("metadata: [title]", "metadata: [text]"))
    done = subprocess.run(
        [sys.executable, "-m", "pipelines", "validate", str(job)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "must be columns of output.keep" in done.stdout + done.stderr


# ----------------------------------------------------------------------- the sink alone


def fake_output(tmp: Path, index: str, n: int, *, big: int | None = None) -> Path:
    """An embed job's output of ``n`` rows written directly (the sink reads only it)."""
    job = write_job(tmp, index, {f"k{i}": "t" for i in range(n)})
    out = tmp / "out" / "vec.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    values = rng.normal(size=(n, 384)).astype(np.float32)
    titles = ["x" * 11_000 if i == big else f"title k{i}" for i in range(n)]
    emb = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), 384)
    table = pa.table(
        {
            "_key": [f"k{i}" for i in range(n)],
            "_hash": [f"h{i}" for i in range(n)],
            "embedding": emb,
            "doc_id": [f"k{i}" for i in range(n)],
            "title": titles,
        }
    )
    pq.write_table(table, out)
    return job


class CrashAfter(VectorizeClient):
    """A client whose process 'dies' (a RUN-scope error) on upsert number ``n + 1``."""

    def __init__(self, settings: ProviderSettings, n: int) -> None:
        super().__init__(settings, policy=RetryPolicy(max_attempts=1))
        self.left, self.upserts = n, 0

    async def upsert(self, name: str, ndjson: bytes) -> None:
        if self.left == 0:
            raise AuthenticationFailed("killed")
        self.left -= 1
        self.upserts += ndjson.count(b"\n")
        await super().upsert(name, ndjson)


def settings(emu: RunningEmulator) -> ProviderSettings:
    return ProviderSettings(base_url=emu.base_url, account_id="vec-acct", token=TOKEN)


def make_index(emu: RunningEmulator, index: str) -> None:
    with api(emu) as c:
        c.post("", json={"name": index, "config": {"dimensions": 384, "metric": "cosine"}})


def test_a_crash_resends_at_most_the_batch_in_flight(
    tmp_path: Path, emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = name()
    make_index(emu, index)
    job = load_job(fake_output(tmp_path, index, 25))
    monkeypatch.setattr(sink, "MAX_UPSERT_VECTORS", 10)  # batches of 10, 10, 5

    async def go(n: int) -> tuple[int, Exception | None]:
        client = CrashAfter(settings(emu), n)
        try:
            await sink.sync_vectorize(job, client)
        except AuthenticationFailed as exc:
            return client.upserts, exc
        finally:
            await client.aclose()
        return client.upserts, None

    sent, crash = asyncio.run(go(1))  # the second batch dies in flight
    assert (sent, crash is not None) == (10, True)
    rest, crash = asyncio.run(go(99))
    assert (rest, crash) == (15, None)  # nothing acknowledged is sent twice
    with api(emu) as c:
        assert c.get(f"/{index}").json()["result"]["vectorCount"] == 25


def test_one_bad_vector_is_a_failure_and_the_rest_go_in(
    tmp_path: Path, emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = name()
    make_index(emu, index)
    job = load_job(fake_output(tmp_path, index, 12, big=7))
    # let the 11 KB metadata through our own check, so that Vectorize is the one to refuse
    monkeypatch.setattr(sink, "MAX_METADATA_BYTES", 10**9)

    async def go() -> sink.SinkReport:
        async with VectorizeClient(settings(emu)) as client:
            return await sink.sync_vectorize(job, client)

    report = asyncio.run(go())
    assert (report.upserted, report.failed) == (11, 1)
    assert report.failures[0][0] == "k7" and report.requests > 1
    assert sink.failed_count(job) == 1
    monkeypatch.setattr(sink, "MAX_METADATA_BYTES", 10 * 1024)  # our check: never sent
    again = asyncio.run(go())
    assert (again.upserted, again.failed, again.unchanged) == (0, 1, 11)
    assert again.requests == 0


@pytest.mark.emulator(error_rate=0.3, capacity_rate=0.2, seed=7)
def test_transient_vectorize_errors_are_retried(
    tmp_path: Path, emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = name()
    with api(emu) as c:  # the setup itself may meet the faults: try until it is made
        for _ in range(50):
            made = c.post(
                "", json={"name": index, "config": {"dimensions": 384, "metric": "cosine"}}
            )
            if made.status_code in (200, 409):
                break
    job = load_job(fake_output(tmp_path, index, 40))
    monkeypatch.setattr(sink, "MAX_UPSERT_VECTORS", 5)
    policy = RetryPolicy(max_attempts=20, base_delay_s=0.0, jitter=False)

    async def go() -> sink.SinkReport:
        async with VectorizeClient(settings(emu), policy=policy) as client:
            return await sink.sync_vectorize(job, client)

    report = asyncio.run(go())
    assert (report.upserted, report.failed) == (40, 0)
    emu.config.error_rate = emu.config.capacity_rate = 0.0
    with api(emu) as c:
        assert c.get(f"/{index}").json()["result"]["vectorCount"] == 40


KILLED_SINK = """
import asyncio, sys
from pipelines.job.load import load_job
from pipelines.output import vectorize as sink
from pipelines.providers.base import ProviderSettings
from pipelines.providers.vectorize import VectorizeClient

sink.MAX_UPSERT_VECTORS = 5
job = load_job(sys.argv[1])
settings = ProviderSettings(base_url=sys.argv[2], account_id="vec-acct", token=sys.argv[3])

async def go():
    async with VectorizeClient(settings) as client:
        await sink.sync_vectorize(job, client)

asyncio.run(go())
"""


def journalled(job_path: Path) -> int:
    import sqlite3

    path = sink.journal_path(load_job(job_path))
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path) as db:
            return int(db.execute("SELECT COUNT(*) FROM sent").fetchone()[0])
    except sqlite3.Error:
        return 0


@pytest.mark.emulator(latency_ms=150)
def test_kill_9_resends_at_most_the_batch_in_flight(tmp_path: Path, emu: RunningEmulator) -> None:
    """A real SIGKILL of a process in the middle of its upserts."""
    import signal
    import time

    index = name()
    make_index(emu, index)
    job_path = tmp_path / "vec.yaml"
    fake_output(tmp_path, index, 60)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_SINK, str(job_path), emu.base_url, TOKEN],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    deadline = time.monotonic() + 120
    # waits on the other process's progress, not on a clock: kill once two batches are in
    while journalled(job_path) < 10 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    recorded = journalled(job_path)
    with api(emu) as c:
        in_index = c.get(f"/{index}").json()["result"]["vectorCount"]
    assert 10 <= recorded < 60
    assert recorded <= in_index <= recorded + 5  # at most the batch in flight got in unrecorded

    async def resume() -> sink.SinkReport:
        async with VectorizeClient(settings(emu)) as client:
            return await sink.sync_vectorize(load_job(job_path), client)

    report = asyncio.run(resume())
    assert report.upserted == 60 - recorded and report.unchanged == recorded
    with api(emu) as c:
        assert c.get(f"/{index}").json()["result"]["vectorCount"] == 60


@pytest.mark.emulator(rpm_scale=100)
def test_a_rehearsal_never_counts_as_the_real_index(tmp_path: Path, emu: RunningEmulator) -> None:
    """--provider emulator upserts into its own throw-away emulator; the journal keeps
    that apart, so the run against the account's API still sends every vector."""
    index = name()
    rows = {f"r{i}": f"rehearsed text {i}" for i in range(12)}
    job = write_job(tmp_path, index, rows)
    rehearsal = cli(emu, tmp_path, "run", "--no-progress", "--provider", "emulator", str(job))
    assert rehearsal.returncode == 0, rehearsal.stderr
    assert sink_figures(tmp_path)["upserted"] == 12
    with api(emu) as c:
        assert c.get(f"/{index}").status_code == 404  # nothing reached this account
    assert cli(emu, tmp_path, "vectorize", "create", index, "--model", SMALL).returncode == 0
    real = cli(emu, tmp_path, "run", "--no-progress", str(job))
    assert real.returncode == 0, real.stderr
    assert sink_figures(tmp_path)["upserted"] == 12
    with api(emu) as c:
        assert c.get(f"/{index}").json()["result"]["vectorCount"] == 12
