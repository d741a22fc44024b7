"""Packing calls into Batch API payloads (run.batch_payload): each item is the request sync
mode would send, a payload holds at most ``limits.batch_items`` requests and never more than
10 MB once encoded with its references, and ``plan`` counts the payloads a run makes."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from pipelines.catalog.models import get_model
from pipelines.core.columns import KEY
from pipelines.job.load import load_job
from pipelines.providers.cloudflare import BATCH_MAX_BYTES
from pipelines.run.batch_payload import PayloadBuffer, count_payloads, entry_for, reference
from pipelines.tasks.registry import make_task
from pipelines.tasks.task import Task

BGE = "@cf/baai/bge-small-en-v1.5"


def task_for(tmp: Path, items: int = 500) -> Task:
    (tmp / "in.csv").write_text("id,text\n1,x\n")
    (tmp / "job.yaml").write_text(
        f"""name: pack
source: {{kind: csv, path: in.csv, key: id}}
task: {{kind: embed, model: "{BGE}", input: text, truncate: true}}
output: {{path: out.parquet}}
limits: {{mode: batch, batch_items: {items}}}
"""
    )
    job = load_job(tmp / "job.yaml")
    return make_task(job, get_model(BGE), [])


def test_payloads_stay_under_10_mb_with_their_references(tmp_path: Path) -> None:
    task = task_for(tmp_path, items=10_000)
    # 100 texts of ~6 kB a call (cut to the model's tokens when sent: ~250 kB a request)
    texts = [f"{i} " + "word " * 1_200 for i in range(300)]
    calls, failures = task.prepare(pl.DataFrame({KEY: [str(i) for i in range(300)], "text": texts}))
    assert not failures and len(calls) == 3
    made = [entry_for(task, task.model, c) for c in calls]
    assert made[0].bodies[0] == dict(task.requests(calls[0]).bodies[0])  # sync's request
    entries = made * 20  # 60 requests, about 15 MB
    payloads, buffer = [], PayloadBuffer(10_000)
    for entry in entries:
        if not buffer.fits(entry):
            payloads.append(buffer.take())
        buffer.add(entry)
    payloads.append(buffer.take())
    assert len(payloads) == count_payloads(entries, 10_000) == 2
    for payload in payloads:
        items = [
            {**body, "external_reference": reference("f" * 32, 99_999)}  # the longest one
            for entry in payload
            for body in entry.bodies
        ]
        encoded = json.dumps({"requests": items}, ensure_ascii=False, separators=(",", ":"))
        assert len(encoded.encode()) <= BATCH_MAX_BYTES
    # full: one more request would not have fitted
    size = sum(e.size for e in payloads[0])
    assert size + made[0].size > BATCH_MAX_BYTES - 100


def test_payloads_hold_at_most_batch_items_requests(tmp_path: Path) -> None:
    task = task_for(tmp_path, items=7)
    texts = [f"short text {i}" for i in range(2_050)]
    calls, _ = task.prepare(pl.DataFrame({KEY: [str(i) for i in range(2_050)], "text": texts}))
    entries = [entry_for(task, task.model, c) for c in calls]
    assert len(entries) == 21  # 100 texts a request
    assert count_payloads(entries, 7) == 3
    assert count_payloads(entries, 500) == 1
    assert count_payloads([], 7) == 0
