"""P4: peak RSS of COMPLETE ``pipelines run`` embed jobs (bge-small, 384 floats per row) at
1 million input rows ÷ at 100 thousand rows (goal ≤ 1.3, and under 600 MB at 1 million).

Each size is run twice against the same emulator process (``--rpm-scale`` high, so the
runs are limited by the client's CPU, not by the model's per-minute limit):

1. a complete run: every row is sent, journaled, and merged into the output at the end;
2. a re-run with nothing new: every row is looked up among the done keys and skipped,
   and the output is left as it is.

The figure of a size is the larger peak of its two runs. A growth of the output with the
row count (the end-of-run merge of the old output and the journals, the set of done keys,
the keys already seen) shows up as a ratio above 1. The peak for 10 million rows is
extrapolated (printed, and said to be one) along the line through the two largest sizes:
the full mode also runs a middle size (300 thousand rows) so that the slope is not that of
the first rows, where caches (SQLite's, the allocators') are still filling.
The peak RSS of each ``pipelines run`` process comes from ``wait4``; the emulator runs in
its own process. Inputs are Parquet files generated once into ``$PIPELINES_BENCH_DATA``
(default ``/tmp/pipelines-bench-data``); the first rows of the large file are the small
file's rows.

    python3 benchmarks/memory.py [--short] [--rows 1000000] [--small 100000] [--middle 300000]
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
    BGE,
    Measured,
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
RATIO_GOAL = 1.3
EXTRAPOLATE_TO = 10_000_000


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


def complete_runs(folder: Path, source: Path, env: dict[str, str]) -> tuple[Measured, Measured]:
    """The complete run of ``source`` and the re-run that finds nothing new."""
    job = write_job(folder, model=BGE, kind="embed", source=source, rpm=1_000_000)
    first = pipelines_run(job, env)
    check_run(first)
    again = pipelines_run(job, env)
    check_run(again)
    return first, again


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="100 thousand vs 20 thousand rows")
    parser.add_argument("--rows", type=int, default=None, help="the large input")
    parser.add_argument("--small", type=int, default=None, help="the small input")
    parser.add_argument("--middle", type=int, default=None, help="0: none (--short: none)")
    args = parser.parse_args()
    large = args.rows or (100_000 if args.short else 1_000_000)
    small = args.small or (20_000 if args.short else 100_000)
    middle = args.middle if args.middle is not None else (0 if args.short else 300_000)

    sizes = sorted({small, large, *([middle] if small < middle < large else [])})
    files = {n: input_file(n) for n in sizes}
    floor = measured_run(
        [sys.executable, "-c", "import polars, pyarrow.parquet, httpx, pipelines.run.runner"],
        dict(os.environ),
    )
    runs: dict[int, tuple[Measured, Measured]] = {}
    outputs: dict[int, float] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        emulator_process(daily_neurons=10**12, rpm_scale=1000) as emu,
    ):
        for n, source in files.items():
            folder = Path(tmp) / str(n)
            folder.mkdir()
            runs[n] = complete_runs(folder, source, run_env(emu, folder / "state"))
            output = folder / "out" / "bench.parquet"
            if pq.ParquetFile(output).metadata.num_rows != n:
                raise SystemExit(f"the output of the {n:,}-row run does not have {n:,} rows")
            outputs[n] = output.stat().st_size / 2**20

    imports = f"imports alone: {floor.max_rss_mb:.0f} MB"
    print(f"complete embed runs (bge-small, 384 floats a row); {imports}")
    print(
        f"{'input rows':>12} {'rows done':>10} {'output MB':>10} {'peak MB':>8} {'wall s':>7}"
        f" {'re-run peak MB':>15} {'re-run s':>9} {'skipped':>10}"
    )
    peaks: dict[int, float] = {}
    for n, (first, again) in runs.items():
        done = int(summary_figure(first, "rows done"))
        skipped = int(summary_figure(again, "skipped"))
        peaks[n] = max(first.max_rss_mb, again.max_rss_mb)
        print(
            f"{n:>12,} {done:>10,} {outputs[n]:>10.0f} {first.max_rss_mb:>8.1f}"
            f" {first.wall_s:>7.1f} {again.max_rss_mb:>15.1f} {again.wall_s:>9.1f} {skipped:>10,}"
        )
    big, little = peaks[large], peaks[small]
    ratio = big / little
    below = sizes[-2]  # the slope of the largest sizes: caches fill during the first rows
    per_row = (big - peaks[below]) / (large - below)
    projected = big + max(0.0, per_row) * (EXTRAPOLATE_TO - large)
    extrapolated = f"extrapolated (not measured) to {EXTRAPOLATE_TO:,} rows: {projected:.0f} MB"
    if len(sizes) < 3:  # two small sizes: the slope is the caches filling, not a trend
        extrapolated = "no extrapolation from two sizes (the full mode makes one)"
    print(f"growth {per_row * 1024:.4f} kB a row from {below:,} to {large:,} rows; {extrapolated}")
    result(
        "P4",
        f"peak RSS of complete runs, {large:,} ÷ {small:,} input rows",
        ratio,
        f"<= {RATIO_GOAL}",
        ratio <= RATIO_GOAL,
        shown=f"{ratio:.3f}",
        note=f"{big:.0f} MB vs {little:.0f} MB",
    )
    result(
        "P4",
        f"peak RSS of a complete run of {large:,} input rows",
        big,
        f"< {LIMIT_MB:.0f} MB",
        big < LIMIT_MB,
        shown=f"{big:.0f} MB",
        note=extrapolated,
        extra={"extrapolated_mb": projected if len(sizes) > 2 else None},
    )


if __name__ == "__main__":
    main()
