"""Incremental runs over an input that changes (issue 11): a row whose content changed is
processed again and replaces its old result (one row per key, ever), ``output.sync`` drops
the rows whose key left the input, ``plan`` counts new / changed / removed rows, repeated
keys are counted and recorded (never silent, also across batches), and turning
``task.truncate`` on makes exactly the rows that were too long pending, without --fresh."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from pipelines.budget import Ledger
from pipelines.catalog.models import ModelInfo
from pipelines.cli import main
from pipelines.core.columns import KEY, ROW_HASH
from pipelines.core.errors import InvalidInput
from pipelines.emulator.server import RunningEmulator
from pipelines.job.load import load_job
from pipelines.providers.base import Provider
from pipelines.run.budget_guard import RunBudget
from pipelines.run.plan import plan_job
from pipelines.run.report import RunReport
from pipelines.run.runner import RunContext, arun_job
from pipelines.run.settings import RunSettings

BGE = "@cf/baai/bge-small-en-v1.5"
WORDS = "alpha beta gamma delta river mountain city market music garden ocean winter".split()

pytestmark = pytest.mark.emulator(rpm_scale=100)


@pytest.fixture
def emu(emu: RunningEmulator, env: dict[str, str]) -> RunningEmulator:
    """The shared emulator, with the environment pointing at it."""
    return emu


def text_of(i: int) -> str:
    return " ".join(WORDS[(i * k) % len(WORDS)] for k in range(1, 6)) + f" #{i}"


def write_corpus(tmp: Path, rows: dict[int, str], titles: dict[int, str] | None = None) -> None:
    titles = titles or {}
    pl.DataFrame(
        {
            "doc_id": [str(i) for i in rows],
            "title": [titles.get(i, f"doc {i}") for i in rows],
            "text": list(rows.values()),
        }
    ).write_csv(tmp / "corpus.csv")


def write_job(tmp: Path, *, output: dict[str, Any] | None = None, **task: Any) -> Path:
    job = {
        "name": "incremental",
        "source": {"kind": "csv", "path": "corpus.csv", "key": "doc_id"},
        "task": {"kind": "embed", "model": BGE, "input": "text", **task},
        "output": {"path": "out/result.parquet", "keep": ["title"], **(output or {})},
        "limits": {"concurrency": 4},
    }
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


def run(job: Path, *args: str) -> tuple[int, str]:
    return invoke("run", "--no-progress", *args, str(job))


def items_sent(emu: RunningEmulator) -> int:
    return int(emu.stats()["models"].get(BGE, {}).get("items", 0))


def vectors(tmp: Path) -> dict[str, np.ndarray]:
    frame = pl.read_parquet(tmp / "out/result.parquet")
    return {k: np.asarray(v) for k, v in zip(frame[KEY], frame["embedding"], strict=True)}


def output(tmp: Path) -> pl.DataFrame:
    return pl.read_parquet(tmp / "out/result.parquet")


def failures(tmp: Path) -> pl.DataFrame:
    return pl.read_parquet(tmp / "out/result.failures.parquet")


# -- changed rows --------------------------------------------------------------------------


def test_a_changed_text_is_sent_again_and_replaces_its_row(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    rows = {i: text_of(i) for i in range(120)}
    write_corpus(tmp_path, rows)
    job = write_job(tmp_path)
    assert run(job)[0] == 0
    before = vectors(tmp_path)
    sent = items_sent(emu)

    rows[50] = "a brand new text for row fifty"
    rows[5] = rows[7]  # a text the cache already knows: no request at all
    write_corpus(tmp_path, rows, titles={60: "a new title"})  # only a kept column changed
    code, out = run(job)
    assert code == 0, out
    assert items_sent(emu) == sent + 1  # row 50's new text, nothing else
    frame = output(tmp_path)
    assert frame.height == 120 and frame[KEY].n_unique() == 120  # replaced, never added
    after = vectors(tmp_path)
    assert not np.allclose(after["50"], before["50"])
    np.testing.assert_array_equal(after["5"], before["7"])
    assert frame.filter(pl.col(KEY) == "60")["title"].to_list() == ["a new title"]
    for key in set(before) - {"5", "50"}:
        np.testing.assert_array_equal(after[key], before[key])

    bytes_before = (tmp_path / "out/result.parquet").read_bytes()
    code, out = run(job)
    assert code == 0, out
    assert "skipped 120" in out
    assert (tmp_path / "out/result.parquet").read_bytes() == bytes_before  # nothing new


def test_every_output_row_carries_the_hash_of_its_input(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    write_corpus(tmp_path, {i: text_of(i) for i in range(5)})
    assert run(write_job(tmp_path))[0] == 0
    frame = output(tmp_path)
    hashes = frame[ROW_HASH].to_list()
    assert all(isinstance(h, str) and len(h) == 32 for h in hashes)
    assert len(set(hashes)) == 5


def test_a_fixed_row_that_had_failed_for_good_is_processed(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    rows = {1: text_of(1), 2: "   ", 3: text_of(3)}
    write_corpus(tmp_path, rows)
    job = write_job(tmp_path)
    assert run(job)[0] == 1
    assert failures(tmp_path)["error"].to_list() == ["EmptyInput"]
    rows[2] = "now there is a text"
    write_corpus(tmp_path, rows)
    code, out = run(job)
    assert code == 0, out
    assert sorted(output(tmp_path)[KEY].to_list()) == ["1", "2", "3"]
    assert not (tmp_path / "out/result.failures.parquet").exists() or failures(tmp_path).is_empty()


def test_a_legacy_output_without_hashes_is_kept_and_learns_them(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    rows = {i: text_of(i) for i in range(10)}
    write_corpus(tmp_path, rows)
    job = write_job(tmp_path)
    assert run(job)[0] == 0
    path = tmp_path / "out/result.parquet"
    table = pq.read_table(path)  # as an older version wrote it: no hash column
    pq.write_table(table.drop_columns([ROW_HASH]), path)
    sent = items_sent(emu)
    rows[10] = text_of(10)  # one new row, so the output is written again
    write_corpus(tmp_path, rows)
    code, out = run(job)
    assert code == 0, out
    assert items_sent(emu) == sent + 1  # the old rows are not sent again
    frame = output(tmp_path)
    assert frame.height == 11 and frame[ROW_HASH].null_count() == 0
    # from now on their changes are seen
    rows[3] = "changed after the upgrade"
    write_corpus(tmp_path, rows)
    assert run(job)[0] == 0
    assert items_sent(emu) == sent + 2


# -- rows whose key left the input ---------------------------------------------------------


@pytest.mark.parametrize("sync", [False, True])
def test_sync_drops_the_rows_whose_key_left_the_input(
    tmp_path: Path, emu: RunningEmulator, sync: bool
) -> None:
    rows = {i: text_of(i) for i in range(30)}
    write_corpus(tmp_path, rows)
    job = write_job(tmp_path, output={"sync": sync})
    assert run(job)[0] == 0
    for i in (3, 4, 20):
        del rows[i]
    rows[30] = text_of(30)
    write_corpus(tmp_path, rows)
    code, out = run(job)
    assert code == 0, out
    keys = set(output(tmp_path)[KEY].to_list())
    expected = {str(i) for i in range(31)}
    assert keys == (expected - {"3", "4", "20"} if sync else expected)


def test_sync_alone_rewrites_the_output_once(tmp_path: Path, emu: RunningEmulator) -> None:
    rows = {i: text_of(i) for i in range(10)}
    write_corpus(tmp_path, rows)
    job = write_job(tmp_path, output={"sync": True})
    assert run(job)[0] == 0
    del rows[9]
    write_corpus(tmp_path, rows)
    assert run(job)[0] == 0  # nothing to send, one row to drop
    assert sorted(output(tmp_path)[KEY].to_list(), key=int) == [str(i) for i in range(9)]
    before = (tmp_path / "out/result.parquet").read_bytes()
    assert run(job)[0] == 0
    assert (tmp_path / "out/result.parquet").read_bytes() == before


# -- plan ----------------------------------------------------------------------------------


def test_plan_counts_new_changed_and_removed_rows(tmp_path: Path, emu: RunningEmulator) -> None:
    rows = {i: text_of(i) for i in range(40)}
    write_corpus(tmp_path, rows)
    job = write_job(tmp_path)
    assert run(job)[0] == 0
    for i in (1, 2):
        rows[i] = f"changed text {i}"
    for i in (30, 31, 32):
        del rows[i]
    for i in range(100, 104):
        rows[i] = text_of(i)
    write_corpus(tmp_path, rows)

    code, out = invoke("plan", "--json", str(job))
    assert code == 0, out
    plan = json.loads(out)
    assert (plan["rows_new"], plan["rows_changed"], plan["rows_removed"]) == (4, 2, 3)
    assert plan["rows_pending"] == 6 and plan["rows_done"] == 35
    code, out = invoke("plan", str(job))
    assert code == 0, out
    assert "4 new" in out and "2 changed" in out and "3 removed" in out


# -- duplicate keys ------------------------------------------------------------------------


def test_duplicate_keys_are_counted_and_recorded_once(tmp_path: Path, emu: RunningEmulator) -> None:
    pl.DataFrame(
        {
            "doc_id": ["1", "2", "1", "3", "1", "2"],
            "title": list("abcdef"),
            "text": [text_of(i) for i in range(6)],
        }
    ).write_csv(tmp_path / "corpus.csv")
    job = write_job(tmp_path)
    code, out = run(job)
    assert "Traceback" not in out
    assert "duplicates 3" in out, out
    frame = output(tmp_path)
    assert sorted(frame[KEY].to_list()) == ["1", "2", "3"]
    assert frame.filter(pl.col(KEY) == "1")["title"].to_list() == ["a"]  # the first row kept
    failed = failures(tmp_path)
    dups = failed.filter(pl.col("error") == "DuplicateKey")
    assert sorted(dups[KEY].to_list()) == ["1", "2"]
    assert dups["retryable"].to_list() == [False, False]
    assert all("more than once" in m for m in dups["message"].to_list())
    # a re-run still says so, but records nothing new and sends nothing
    sent = items_sent(emu)
    code, out = run(job)
    assert "duplicates 3" in out and "failed 0" in out, out
    assert items_sent(emu) == sent
    assert failures(tmp_path).filter(pl.col("error") == "DuplicateKey").height == 2
    # once the input is fixed, the record goes
    pl.DataFrame(
        {"doc_id": ["1", "2", "3"], "title": list("abd"), "text": [text_of(i) for i in (0, 1, 3)]}
    ).write_csv(tmp_path / "corpus.csv")
    code, out = run(job)
    assert code == 0, out
    path = tmp_path / "out/result.failures.parquet"
    assert not path.exists() or failures(tmp_path).is_empty()


def test_duplicate_keys_are_found_across_batches(tmp_path: Path, emu: RunningEmulator) -> None:
    n = 2_000
    keys = [str(i % 1_500) for i in range(n)]  # rows 1,500.. repeat the first 500 keys
    pl.DataFrame(
        {"doc_id": keys, "title": ["t"] * n, "text": [text_of(i) for i in range(n)]}
    ).write_csv(tmp_path / "corpus.csv")
    job = load_job(write_job(tmp_path))
    plan = plan_job(job, RunSettings(batch_rows=64, use_cache=False))
    assert plan.rows_duplicate == 500
    assert plan.rows_total == n


def test_identical_rows_without_a_key_are_counted_not_failed(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    pl.DataFrame({"title": ["a", "a", "b"], "text": ["same", "same", "other"]}).write_csv(
        tmp_path / "corpus.csv"
    )
    job = write_job(tmp_path)
    raw = yaml.safe_load(job.read_text())
    del raw["source"]["key"]
    job.write_text(yaml.safe_dump(raw))
    code, out = run(job)
    assert code == 0, out  # the same row twice is answered once: nothing is lost
    assert "duplicates 1" in out
    assert output(tmp_path).height == 2


# -- task.truncate -------------------------------------------------------------------------


def test_turning_truncate_on_sends_only_the_rows_that_were_too_long(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    rows = {i: text_of(i) for i in range(20)}
    rows[4] = "river " * 700
    rows[9] = "ocean " * 800
    write_corpus(tmp_path, rows)
    job = write_job(tmp_path)
    assert run(job)[0] == 1
    assert sorted(failures(tmp_path)["error"].to_list()) == ["InputTooLong", "InputTooLong"]
    sent = items_sent(emu)
    before = output(tmp_path)

    job = write_job(tmp_path, truncate=True)
    code, out = run(job)
    assert code == 0, out
    assert items_sent(emu) == sent + 2  # the two long rows, nothing else
    frame = output(tmp_path)
    assert sorted(frame[KEY].to_list(), key=int) == [str(i) for i in range(20)]
    assert frame.filter(~pl.col(KEY).is_in(["4", "9"])).sort(KEY).equals(before.sort(KEY))
    path = tmp_path / "out/result.failures.parquet"
    assert not path.exists() or failures(tmp_path).is_empty()


def test_too_long_rows_stay_failed_while_truncate_is_off(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    write_corpus(tmp_path, {1: text_of(1), 2: "river " * 700})
    job = write_job(tmp_path)
    assert run(job)[0] == 1
    _, out = run(job)
    assert "failed 0" in out and "skipped 2" in out, out


# -- the failures file keeps one record per key --------------------------------------------


def test_failures_written_by_an_older_version_are_read(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    write_corpus(tmp_path, {1: text_of(1), 2: " "})
    job = write_job(tmp_path)
    assert run(job)[0] == 1
    path = tmp_path / "out/result.failures.parquet"
    table = pq.read_table(path)
    pq.write_table(table.drop_columns([ROW_HASH]), path)  # no hash column yet
    write_corpus(tmp_path, {1: text_of(1), 2: " ", 3: text_of(3)})
    _, out = run(job)
    assert "Traceback" not in out
    assert "failed 0" in out, out  # the empty row is not tried again
    assert failures(tmp_path)[KEY].to_list() == ["2"]
    assert pa.types.is_string(pq.read_schema(path).field(ROW_HASH).type)


# -- the latest outcome of a key wins --------------------------------------------------------


class Scripted(Provider):
    """Embeds every text as a constant vector; a 400 for the texts in ``bad``."""

    def __init__(self, bad: set[str]) -> None:
        self.bad = bad
        self.texts: list[str] = []

    async def run(self, model: ModelInfo, inputs: dict[str, Any]) -> Any:
        texts = list(inputs["text"])
        self.texts.extend(texts)
        if self.bad & set(texts):
            raise InvalidInput("AiError: Bad input", status=400, code=5006)
        dim = model.dimensions or 0
        return {"shape": [len(texts), dim], "data": [[0.25] * dim for _ in texts]}


def run_scripted(job_path: Path, provider: Provider) -> RunReport:
    job = load_job(job_path)
    ledger = Ledger(job_path.parent / "ledger.sqlite3", account="t", daily_neurons=10_000)
    try:
        context = RunContext(
            provider=provider, budget=RunBudget(ledger, None), produced_by=job.task.model
        )
        return asyncio.run(arun_job(job, context, RunSettings(use_cache=False)))
    finally:
        ledger.close()


def test_a_changed_row_whose_new_answer_fails_loses_its_stale_result(tmp_path: Path) -> None:
    rows = {i: text_of(i) for i in range(6)}
    write_corpus(tmp_path, rows)
    job = write_job(tmp_path)
    assert run_scripted(job, Scripted(set())).exit_code == 0
    rows[2] = "a text the model refuses"
    write_corpus(tmp_path, rows)
    provider = Scripted({rows[2]})
    report = run_scripted(job, provider)
    assert report.rows_failed == 1
    assert rows[2] in provider.texts and text_of(3) not in provider.texts
    assert sorted(output(tmp_path)[KEY].to_list()) == ["0", "1", "3", "4", "5"]  # no stale row
    assert failures(tmp_path)[KEY].to_list() == ["2"]
    rows[2] = "a text it takes"
    write_corpus(tmp_path, rows)
    assert run_scripted(job, Scripted(set())).exit_code == 0
    assert sorted(output(tmp_path)[KEY].to_list()) == [str(i) for i in range(6)]
    assert not (tmp_path / "out/result.failures.parquet").exists() or failures(tmp_path).is_empty()
