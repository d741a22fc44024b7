"""P5: wall time of ``pipelines run`` ÷ the ideal, requests ÷ requests-per-minute (goal:
at most 1.05 × the ideal plus 5 s of start-up).

A bge-small embedding job whose pace is set by its ``limits.requests_per_minute`` runs
against an emulator in its own process with 200 ± 100 ms latency and a per-minute limit
equal to the job's. The wall time is the whole ``pipelines run`` process, from spawn to
exit (interpreter start, imports, reading, writing the output). The ideal counts the
requests the emulator saw at exactly the configured rate.

    python3 benchmarks/wall_time.py [--short] [--texts 60000] [--rpm 600]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import (
    BGE,
    RequestCounter,
    check_run,
    emulator_process,
    pipelines_run,
    result,
    run_env,
    summary_figure,
    text_frame,
    write_job,
)

CATALOG_RPM = 3000  # bge-small-en-v1.5's published limit
FACTOR, STARTUP_S = 1.05, 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="10,000 texts: a 10 s ideal (CI)")
    parser.add_argument("--texts", type=int, default=None)
    parser.add_argument("--rpm", type=int, default=600)
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--jitter-ms", type=float, default=100)
    args = parser.parse_args()
    n = args.texts or (10_000 if args.short else 60_000)

    with (
        tempfile.TemporaryDirectory() as tmp,
        emulator_process(
            daily_neurons=10**12,
            rpm_scale=(args.rpm + 0.5) / CATALOG_RPM,
            latency_ms=args.latency_ms,
            latency_jitter_ms=args.jitter_ms,
        ) as emu,
    ):
        folder = Path(tmp)
        source = folder / "texts.parquet"
        text_frame(n, seed=5).write_parquet(source)
        job = write_job(folder, model=BGE, kind="embed", source=source, rpm=args.rpm)
        with RequestCounter(emu) as counter:
            run = pipelines_run(job, run_env(emu, folder / "state"))
        check_run(run)
        stats = emu.stats()

    requests = int(stats["requests_total"])
    ideal = requests / args.rpm * 60.0
    wall = run.wall_s
    bound = FACTOR * ideal + STARTUP_S
    limited = int(stats.get("error_codes", {}).get("3021", 0))
    print(
        f"bge-small embedding, {n:,} texts, rpm {args.rpm}, "
        f"latency {args.latency_ms:.0f} ± {args.jitter_ms:.0f} ms; {requests} requests, "
        f"{limited} answered 3021"
    )
    print(
        f"ideal {ideal:.1f} s; wall {wall:.1f} s (the run's own summary: "
        f"{summary_figure(run, 'wall'):.1f} s after start-up); client CPU {run.cpu_s:.1f} s"
    )
    # where the time went, from the emulator's side (answers are counted 200 ± 100 ms
    # after they were sent)
    to_first = counter.first() - run.started
    sending = counter.last() - counter.first()
    after = run.started + wall - counter.last()
    print(
        f"spawn → first answer {to_first:.2f} s; first → last answer {sending:.2f} s "
        f"({(requests - 1) / sending * 60:.1f} per minute); last answer → exit {after:.2f} s"
    )
    print(f"wall / ideal = {wall / ideal:.4f}; wall - ideal = {wall - ideal:.2f} s")
    result(
        "P5",
        "wall / (requests / rpm)",
        wall / ideal,
        f"<= {FACTOR} + {STARTUP_S:.0f} s",
        wall <= bound,
        shown=f"{wall / ideal:.4f} (+{wall - ideal:.1f} s)",
        note=f"{wall:.1f} s for an ideal {ideal:.1f} s; bound {bound:.1f} s",
        extra={"wall_s": wall, "ideal_s": ideal},
    )


if __name__ == "__main__":
    main()
