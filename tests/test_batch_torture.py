"""Batch mode under ``kill -9`` (issue 15): a 10,000-row job killed at every step a payload
goes through (its intent, its hold, between Cloudflare's answer and the write of its id,
after its id is recorded, after its answers are written, after its hold is settled) and at
random moments, then finished by one clean run.

What must hold at the end: every row exactly once in the output, with the emulator's
vectors; nothing left in the work folder; no hold left open; every kill sent at most one
payload twice (the one whose id was not recorded yet); and the ledger never counted less
than the emulator billed.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest

from pipelines.core.crashpoints import CRASH_AT
from pipelines.emulator.server import RunningEmulator

BGE = "@cf/baai/bge-small-en-v1.5"
ROWS = 10_000
ITEMS = 5  # requests of 100 texts a payload: 500 rows, 20 payloads in all
PAYLOAD_ROWS = ITEMS * 100
POINTS = [
    "batch-intended",
    "batch-held",
    "batch-submitted",  # Cloudflare has the payload; its id is not recorded yet
    "batch-recorded",
    "batch-written",
    "batch-settled",
]
RANDOM_KILLS = 10

pytestmark = pytest.mark.emulator(batch_delay_s=0.4, daily_neurons=1e6, rpm_scale=20, seed=15)


def write_job(folder: Path) -> Path:
    words = "alpha beta gamma delta river mountain city market music garden".split()
    texts = [
        " ".join(words[(i * k + k) % len(words)] for k in range(1, 8)) + f" {i}"
        for i in range(ROWS)
    ]
    pl.DataFrame({"doc_id": list(range(ROWS)), "text": texts}).write_csv(folder / "corpus.csv")
    job = folder / "job.yaml"
    job.write_text(
        f"""name: torture
source: {{kind: csv, path: corpus.csv, key: doc_id}}
task: {{kind: embed, model: "{BGE}", input: text}}
output: {{path: out/result.parquet, keep: [doc_id]}}
limits: {{mode: batch, batch_items: {ITEMS}, requests_per_minute: 600}}
"""
    )
    return job


def start(job: Path, env: dict[str, str], crash_at: str | None = None) -> subprocess.Popen[bytes]:
    child_env = {**env, **({CRASH_AT: crash_at} if crash_at else {})}
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines", "run", "--no-progress", str(job)],
        env=child_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def finish(proc: subprocess.Popen[bytes]) -> int:
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err, err.decode()
    assert proc.returncode in (-signal.SIGKILL, 0, 3), err.decode()
    return proc.returncode


def submitted_rows(emu: RunningEmulator) -> list[int]:
    """Every row in every payload the emulator was given (repeats included)."""
    out: list[int] = []
    for job in list(emu.app.emulator.batches.jobs.values()):
        for item in job.items:
            out.extend(int(text.rsplit(" ", 1)[1]) for text in item["text"])
    return out


def ledger_neurons(state: Path) -> tuple[float, int]:
    """What the ledger counted for the job, and how many holds are still open."""
    with sqlite3.connect(state / "ledger.sqlite3") as c:
        (counted,) = c.execute("SELECT COALESCE(SUM(neurons), 0) FROM usage").fetchone()
        (open_holds,) = c.execute("SELECT COUNT(*) FROM holds WHERE settled IS NULL").fetchone()
    return float(counted), int(open_holds)


@pytest.mark.slow
def test_kill_9_at_every_step_of_a_payload_and_at_random_moments(
    tmp_path: Path, env: dict[str, str], emu: RunningEmulator
) -> None:
    job = write_job(tmp_path)
    rng = random.Random(15)
    killed = 0
    duplicates_allowed = 0
    for point in POINTS:  # each at a payload past the first, chosen at random
        nth = rng.randint(1, 3)
        before = len(submitted_rows(emu))
        code = finish(start(job, env, f"{point}:{nth}"))
        if code == -signal.SIGKILL:
            killed += 1
            duplicates_allowed += 1
            if point == "batch-submitted":  # the payload Cloudflare has, without its id
                assert len(submitted_rows(emu)) > before
    assert killed == len(POINTS), "every crash point was reached"
    for _ in range(RANDOM_KILLS):
        proc = start(job, env)
        deadline = time.monotonic() + rng.uniform(0.3, 4.0)
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            duplicates_allowed += 1
        finish(proc)

    final = subprocess.run(
        [sys.executable, "-m", "pipelines", "run", "--no-progress", str(job)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert final.returncode == 0, final.stdout + final.stderr
    frame = pl.read_parquet(tmp_path / "out/result.parquet")
    assert frame.height == ROWS and frame["_key"].n_unique() == ROWS
    assert sorted(int(k) for k in frame["_key"]) == list(range(ROWS))
    assert frame["_key"].to_list() == [str(d) for d in frame["doc_id"].to_list()]
    work = tmp_path / "out/.result.parquet.pipelines"
    left = sorted(p.name for p in work.iterdir() if p.name != "meta.json")
    assert left == [], left  # no journal, no temporary file, no batch book

    # every row went in a payload; a kill sends at most one payload twice
    rows = submitted_rows(emu)
    assert set(rows) == set(range(ROWS))
    assert len(rows) - ROWS <= duplicates_allowed * PAYLOAD_ROWS, (len(rows), duplicates_allowed)

    # the ledger never counted less than Cloudflare (the emulator) billed, and holds nothing
    stats: dict[str, Any] = emu.stats()["models"][BGE]
    counted, open_holds = ledger_neurons(Path(env["PIPELINES_STATE_DIR"]))
    assert open_holds == 0
    assert counted >= stats["neurons"] - 1e-9, (counted, stats["neurons"])

    # the answers are the emulator's for these very texts (asked again, synchronously)
    texts = pl.read_csv(tmp_path / "corpus.csv", infer_schema=False)
    sample = frame.filter(pl.col("_key").is_in(["0", "4999", "9999"])).sort("_key")
    asked = texts.filter(pl.col("doc_id").is_in(sample["_key"].to_list())).sort("doc_id")
    answer = httpx.post(
        f"{emu.base_url}/accounts/acct/ai/run/{BGE}",
        json={"text": asked["text"].to_list()},
        headers={"Authorization": f"Bearer {env['CLOUDFLARE_API_TOKEN']}"},
    ).json()["result"]["data"]
    np.testing.assert_allclose(np.array(sample["embedding"].to_list()), answer, rtol=1e-6)
