"""A failing write ends the run cleanly: exit 2, one ``error:`` line, the rows written so far
kept. Before, any exception but a ``PipelinesError`` killed the writer silently; with
thousands of rows its queue filled, the workers waited on it and the run hung for good."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from pipelines.cli import main

ROWS = 3000
# Imports the CLI with OutputStore.write_results failing from its second call on, the way a
# bug in the output layer (or a library under it) would.
SCRIPT = """\
import sys
from pipelines.output.store import OutputStore

real = OutputStore.write_results
calls = []

def flaky(self, table):
    calls.append(table.num_rows)
    if len(calls) > 1:
        raise RuntimeError("injected write failure")
    return real(self, table)

OutputStore.write_results = flaky
from pipelines.cli import main

sys.argv = ["pipelines", *sys.argv[1:]]
main()
"""
# Far above how long the run takes; reached only if the run hangs.
HANG_S = 180


def test_an_exception_in_the_writer_aborts_the_run_and_keeps_what_was_written(
    tmp_path: Path,
) -> None:
    rows = "\n".join(f"{i},review number {i} was fine" for i in range(ROWS))
    (tmp_path / "in.csv").write_text("id,text\n" + rows + "\n", encoding="utf-8")
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: writer-fails\n"
        "source: {kind: csv, path: in.csv, key: id}\n"
        "task: {kind: classify, model: '@cf/huggingface/distilbert-sst-2-int8', input: text}\n"
        "output: {path: out.parquet, keep: [id]}\n"
        "limits: {requests_per_minute: 1000000, concurrency: 8}\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, "run", "--no-progress", "--provider", "emulator", str(job)],
        capture_output=True,
        text=True,
        timeout=HANG_S,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "RuntimeError: injected write failure" in errors[0]
    # the first write went through: those rows count as done for the next run
    result = CliRunner().invoke(main, ["plan", "--json", "--provider", "emulator", str(job)])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert 0 < plan["rows_done"] < ROWS
    assert plan["rows_done"] + plan["rows_pending"] == ROWS
