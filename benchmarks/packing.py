"""P2: requests sent ÷ ceil(texts / 100) for a bge-small embedding job (goal ≤ 1.02).

Three inputs, each run through ``pipelines run`` against a fresh emulator process (no rate
limit in the way), counting every request the emulator saw:

- ``one file``: ``--texts`` distinct texts in one Parquet file;
- ``7 files``: the same texts split into 7 Parquet files of uneven sizes, none a multiple of
  100 (a partitioned dataset);
- ``resume``: a first run embeds a random 30 % of the texts, then the whole input is run
  again; only the second run's requests are counted, against ceil(pending / 100).

The figure is the worst of the three.

    python3 benchmarks/packing.py [--short] [--texts 10000]
"""

from __future__ import annotations

import argparse
import itertools
import math
import tempfile
from pathlib import Path

from common import (
    BGE,
    check_run,
    emulator_process,
    pipelines_run,
    result,
    run_env,
    summary_figure,
    text_frame,
    write_job,
)

CUTS = (0.05, 0.18, 0.31, 0.5, 0.77, 0.9)


def _requests(folder: Path, source: Path, state: Path, name: str) -> tuple[int, int]:
    """(requests the emulator saw, rows done) for one run of the embedding job."""
    with emulator_process(daily_neurons=10**12, rpm_scale=1000) as emu:
        job = write_job(folder, model=BGE, kind="embed", source=source, rpm=10**6, name=name)
        run = pipelines_run(job, run_env(emu, state))
        check_run(run)
        stats = emu.stats()
    return int(stats["requests_total"]), int(summary_figure(run, "rows done"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="2,000 texts (CI)")
    parser.add_argument("--texts", type=int, default=None)
    args = parser.parse_args()
    n = args.texts or (2_000 if args.short else 10_000)
    texts = text_frame(n, seed=2)
    rows: list[tuple[str, int, int, int]] = []  # case, texts sent, requests, ideal

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        one = folder / "one.parquet"
        texts.write_parquet(one)
        sent, done = _requests(folder, one, folder / "state1", "one")
        rows.append(("one file", done, sent, math.ceil(done / 100)))

        parts = folder / "parts"
        parts.mkdir()
        # seven uneven parts, none a multiple of 100 rows
        inner = [round(n * f) + 7 * i for i, f in enumerate(CUTS, start=1)]
        cuts = [0, *inner, n]
        for i, (a, b) in enumerate(itertools.pairwise(cuts)):
            texts.slice(a, b - a).write_parquet(parts / f"part-{i:02d}.parquet")
        sent, done = _requests(folder, parts, folder / "state2", "parts")
        rows.append((f"{len(cuts) - 1} files", done, sent, math.ceil(done / 100)))

        # the earlier run's rows are scattered, so pending rows have gaps everywhere
        earlier = texts.sample(fraction=0.3, seed=7).sort("doc_id")
        # one input that grows between the runs (another input would be another job's)
        growing = folder / "resume.parquet"
        earlier.write_parquet(growing)
        job = write_job(folder, model=BGE, kind="embed", source=growing, rpm=10**6, name="resume")
        with emulator_process(daily_neurons=10**12, rpm_scale=1000) as emu:
            check_run(pipelines_run(job, run_env(emu, folder / "state3")))
        texts.write_parquet(growing)
        sent, done = _requests(folder, growing, folder / "state3", "resume")
        rows.append(("resume (30 % done)", done, sent, math.ceil(done / 100)))

    print(f"bge-small embedding, {n:,} distinct texts (8-20 words), batch size 100")
    print(f"{'input':22} {'texts sent':>10} {'requests':>9} {'ceil(/100)':>10} {'ratio':>7}")
    for case, done, sent, ideal in rows:
        print(f"{case:22} {done:>10,} {sent:>9,} {ideal:>10,} {sent / ideal:>7.4f}")
    worst = max(rows, key=lambda r: r[2] / r[3])
    ratio = worst[2] / worst[3]
    result(
        "P2",
        "requests / ceil(texts / 100)",
        ratio,
        "<= 1.02",
        ratio <= 1.02,
        shown=f"{ratio:.4f}",
        note=f"worst case: {worst[0]}, {worst[2]} requests for {worst[1]:,} texts",
    )


if __name__ == "__main__":
    main()
