"""B1: 30,000 embeddings in sync mode and in batch mode (Cloudflare's asynchronous Batch API),
side by side, against the emulator under capacity faults (goal: batch mode sees no 3040 and
bills the same neurons).

Each mode runs against an emulator of its own (own process, same knobs and seed): random
429 / 3040 answers plus capacity outages, during which every synchronous request gets
3040, and ``--batch-delay-s`` for the time a payload takes to run. Sync mode retries with
back-off; rows whose retries run out fail as retryable and the job is run again until it is
done, as a user would. Batch mode submits its payloads and polls them; the Batch API queues
work instead of refusing it for capacity, as Cloudflare documents. Reported per mode: wall
time (every run, spawn to exit), runs, HTTP requests the emulator answered, 3040 answers,
neurons billed.

    python3 benchmarks/batch_mode.py [--short] [--texts 30000] [--batch-delay-s 10]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from common import (
    BGE,
    Measured,
    emulator_process,
    pipelines_run,
    result,
    run_env,
    summary_figure,
    text_frame,
    write_job,
)

MAX_RUNS = 6  # sync mode: runs until every row is done


def knobs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "daily_neurons": 10**12,
        "seed": 15,
        "latency_ms": 40,
        "latency_jitter_ms": 20,
        "capacity_rate": args.capacity_rate,
        "capacity_burst_every_s": args.burst_every_s,
        "capacity_burst_len_s": args.burst_len_s,
        "batch_delay_s": args.batch_delay_s,
    }


def run_mode(mode: str, n: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Run the job in ``mode`` until done against a fresh emulator; what it took."""
    folder = tmp / mode
    folder.mkdir()
    source = folder / "texts.parquet"
    text_frame(n, seed=3).write_parquet(source)
    job = write_job(
        folder, model=BGE, kind="embed", source=source, extra={"limits": {"mode": mode}}
    )
    with emulator_process(**knobs(args)) as emu:
        env = run_env(emu, folder / "state")
        runs: list[Measured] = []
        while len(runs) < MAX_RUNS:
            runs.append(pipelines_run(job, env))
            if runs[-1].returncode == 0:
                break
            if runs[-1].returncode != 1:  # 1: rows failed for now, a re-run sends them
                raise SystemExit(runs[-1].stdout + runs[-1].stderr)
        else:
            raise SystemExit(f"{mode} mode was not done after {MAX_RUNS} runs")
        stats = emu.stats()
    model = stats["models"][BGE]
    return {
        "mode": mode,
        "runs": len(runs),
        "wall_s": sum(r.wall_s for r in runs),
        "cpu_s": sum(r.cpu_s for r in runs),
        "rows": int(sum(summary_figure(r, "rows done") for r in runs)),
        "requests": int(stats["requests_total"]),
        "capacity_3040": int(stats["error_codes"].get("3040", 0)),
        "items": int(model["items"]),
        "neurons": float(model["neurons"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="5,000 texts, 2 s batches (CI)")
    parser.add_argument("--texts", type=int, default=None)
    parser.add_argument("--batch-delay-s", type=float, default=None)
    parser.add_argument("--capacity-rate", type=float, default=0.05)
    parser.add_argument("--burst-every-s", type=float, default=4.0)
    parser.add_argument("--burst-len-s", type=float, default=1.5)
    args = parser.parse_args()
    n = args.texts or (5_000 if args.short else 30_000)
    if args.batch_delay_s is None:
        args.batch_delay_s = 2.0 if args.short else 10.0

    with tempfile.TemporaryDirectory() as tmp:
        sync, batch = (run_mode(mode, n, args, Path(tmp)) for mode in ("sync", "batch"))

    print(
        f"bge-small embeddings, {n:,} texts; emulator: {args.capacity_rate:.0%} of requests "
        f"3040, outages of {args.burst_len_s:g} s every {args.burst_every_s:g} s, "
        f"batches take {args.batch_delay_s:g} s"
    )
    print("| mode | runs | wall | requests | 3040s | rows billed | neurons billed |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for m in (sync, batch):
        print(
            f"| {m['mode']} | {m['runs']} | {m['wall_s']:.1f} s | {m['requests']:,} | "
            f"{m['capacity_3040']:,} | {m['items']:,} | {m['neurons']:.4f} |"
        )
    for m in (sync, batch):
        if m["rows"] != n or m["items"] != n:
            raise SystemExit(f"{m['mode']} mode wrote {m['rows']} rows, billed {m['items']}")
    result(
        "B1",
        "batch mode: 3040 answers",
        batch["capacity_3040"],
        "0",
        batch["capacity_3040"] == 0,
        shown=f"{batch['capacity_3040']} (sync mode: {sync['capacity_3040']:,})",
        extra={"sync": sync, "batch": batch},
    )
    ratio = batch["neurons"] / sync["neurons"]
    result(
        "B1",
        "batch neurons / sync neurons",
        ratio,
        "1 (same bill)",
        abs(ratio - 1) < 1e-9,
        shown=f"{ratio:.6f} ({batch['neurons']:.2f} vs {sync['neurons']:.2f})",
    )
    result(
        "B1",
        "wall time, batch / sync",
        batch["wall_s"] / sync["wall_s"],
        "—",
        None,
        shown=f"{batch['wall_s']:.1f} s vs {sync['wall_s']:.1f} s",
        note=f"requests {batch['requests']:,} vs {sync['requests']:,}",
    )


if __name__ == "__main__":
    main()
