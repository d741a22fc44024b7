"""P4: peak RSS of ``pipelines run`` with 10 million input rows ÷ with 100 thousand rows, on
a classification job (goal ≤ 1.5, and under 600 MB).

Both inputs are Parquet files written by polars with its default row groups; the first
100 thousand rows of the large file are the small file's rows. 10 million classification
rows would take days at 2,000 requests a minute, so both runs stop on ``--max-neurons``
after the same ~1,100 rows (exit 3; ~220 with ``--short``): the work is the same and only
the input size differs.
The peak RSS of the ``pipelines run`` process comes from ``wait4``; the emulator runs in its
own process. Inputs are generated once into ``$PIPELINES_BENCH_DATA`` (default
``/tmp/pipelines-bench-data``).

    python3 benchmarks/memory.py [--short] [--rows 10000000] [--small 100000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
from common import (
    DISTILBERT,
    check_run,
    data_dir,
    emulator_process,
    measured_run,
    pipelines_run,
    result,
    run_env,
    summary_figure,
    text_frame,
    write_job,
)

LIMIT_MB = 600.0


def input_file(rows: int) -> Path:
    """A cached Parquet file of ``rows`` texts (generated on first use)."""
    # the texts depend on polars' hash, so each polars version gets its own files
    path = data_dir() / f"texts-{rows}-polars{pl.__version__}.parquet"
    if not path.exists():
        started = time.perf_counter()
        partial = path.with_suffix(".partial")
        text_frame(rows).write_parquet(partial)
        partial.rename(path)
        print(f"generated {path} in {time.perf_counter() - started:.1f} s")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="1 million vs 10 thousand rows")
    parser.add_argument("--rows", type=int, default=None, help="the large input")
    parser.add_argument("--small", type=int, default=None, help="the small input")
    parser.add_argument("--max-neurons", type=int, default=None, help="where both runs stop")
    args = parser.parse_args()
    large = args.rows or (1_000_000 if args.short else 10_000_000)
    small = args.small or (10_000 if args.short else 100_000)
    # ~22 rows per neuron: 50 stops after ~1,100 rows, 10 after ~220
    budget = args.max_neurons or (10 if args.short else 50)

    files = {n: input_file(n) for n in (small, large)}
    floor = measured_run(
        [sys.executable, "-c", "import polars, pyarrow.parquet, httpx, pipelines.run.runner"],
        dict(os.environ),
    )
    runs = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        emulator_process(daily_neurons=10**12, rpm_scale=30) as emu,
    ):
        for n, source in files.items():
            folder = Path(tmp) / str(n)
            folder.mkdir()
            job = write_job(folder, model=DISTILBERT, kind="classify", source=source, rpm=60_000)
            env = run_env(emu, folder / "state")
            run = pipelines_run(job, env, "--max-neurons", str(budget))
            check_run(run, allowed=(3,))  # 3: stopped by the budget, as intended
            runs[n] = run

    print(
        f"classification job stopped by --max-neurons {budget}; "
        f"imports alone: {floor.max_rss_mb:.0f} MB"
    )
    print(
        f"{'input rows':>12} {'row groups':>10} {'rows done':>10} {'peak RSS MB':>12} {'wall s':>7}"
    )
    for n, run in runs.items():
        groups = pq.ParquetFile(files[n]).metadata.num_row_groups
        done = int(summary_figure(run, "rows done"))
        print(f"{n:>12,} {groups:>10} {done:>10,} {run.max_rss_mb:>12.1f} {run.wall_s:>7.1f}")
    big, little = runs[large].max_rss_mb, runs[small].max_rss_mb
    ratio = big / little
    result(
        "P4",
        f"peak RSS, {large:,} ÷ {small:,} input rows",
        ratio,
        "<= 1.5",
        ratio <= 1.5,
        shown=f"{ratio:.3f}",
        note=f"{big:.0f} MB vs {little:.0f} MB",
    )
    result(
        "P4",
        f"peak RSS with {large:,} input rows",
        big,
        f"< {LIMIT_MB:.0f} MB",
        big < LIMIT_MB,
        shown=f"{big:.0f} MB",
    )


if __name__ == "__main__":
    main()
