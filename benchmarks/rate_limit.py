"""P1: sustained request rate ÷ the job's configured requests-per-minute (goal ≥ 0.97, with
no 3021 provoked).

A distilbert classification job (one text per request) runs through ``pipelines run``
against an emulator in its own process with 200 ± 100 ms latency. The emulator's
per-minute limit is set to exactly the job's ``limits.requests_per_minute`` (catalog rpm ×
``--rpm-scale``), so any overshoot in a sliding minute is answered 429 / 3021. The
emulator's request counter is polled every 50 ms; the rate is the count's growth over a
window of ``--seconds`` (60 in full mode) starting 1 s after the first answer.

    python3 benchmarks/rate_limit.py [--short] [--seconds 60] [--rpm 600]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from common import (
    DISTILBERT,
    RequestCounter,
    emulator_process,
    pipelines_run,
    result,
    run_env,
    text_frame,
    write_job,
)

CATALOG_RPM = 2000  # distilbert-sst-2-int8's published limit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="a 15 s window (CI)")
    parser.add_argument("--seconds", type=float, default=None, help="measured window")
    parser.add_argument("--rpm", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--jitter-ms", type=float, default=100)
    args = parser.parse_args()
    seconds = args.seconds or (15.0 if args.short else 60.0)
    # 1 s before the window and ~3 s after it, so the window never sees start or finish
    rows = int(args.rpm * (seconds + 4.0) / 60.0) + 1
    # a hair over rpm / catalog so that int(catalog × scale) is exactly the job's rpm
    scale = (args.rpm + 0.5) / CATALOG_RPM

    with (
        tempfile.TemporaryDirectory() as tmp,
        emulator_process(
            daily_neurons=10**12,
            rpm_scale=scale,
            latency_ms=args.latency_ms,
            latency_jitter_ms=args.jitter_ms,
        ) as emu,
    ):
        folder = Path(tmp)
        source = folder / "texts.parquet"
        text_frame(rows).write_parquet(source)
        job = write_job(
            folder,
            model=DISTILBERT,
            kind="classify",
            source=source,
            rpm=args.rpm,
            concurrency=args.concurrency,
        )
        env = run_env(emu, folder / "state")

        with RequestCounter(emu) as counter:
            run = pipelines_run(job, env)
        stats = emu.stats()

    if run.returncode != 0:
        sys.stderr.write(run.stdout + run.stderr)
        raise SystemExit(f"pipelines run exited {run.returncode}")
    first, last = counter.first(), counter.last()
    start, end = first + 1.0, first + 1.0 + seconds
    if end > last:
        raise SystemExit(f"the run ended {end - last:.1f} s before the window did")
    served = counter.count_at(end) - counter.count_at(start)
    rate_rpm = served / seconds * 60.0
    ratio = rate_rpm / args.rpm
    total = int(stats["requests_total"])
    overall = (total - 1) / (last - first) * 60.0 if last > first else float("nan")
    codes = stats.get("error_codes", {})
    limited = int(codes.get("3021", 0))

    print(
        f"classification job, {rows} rows, rpm {args.rpm}, concurrency {args.concurrency}, "
        f"latency {args.latency_ms:.0f} ± {args.jitter_ms:.0f} ms, "
        f"emulator limit {int(CATALOG_RPM * scale)} rpm (sliding minute)"
    )
    print(f"window {seconds:.0f} s: {served:.1f} requests = {rate_rpm:.1f} per minute")
    print(f"whole run: {stats['requests_total']} requests, {overall:.1f} per minute first→last")
    print(f"status counts {stats['status_counts']}, error codes {codes or '{}'}")
    print(f"run summary: {run.stdout.strip()}")
    result(
        "P1",
        "sustained rate / configured rpm",
        ratio,
        ">= 0.97",
        ratio >= 0.97,
        shown=f"{ratio:.4f}",
        note=f"{rate_rpm:.1f} of {args.rpm} rpm over {seconds:.0f} s",
        extra={"seconds": seconds},
    )
    # the emulator counts a sliding minute: fewer requests than the limit cannot trip it
    vacuous = total <= int(CATALOG_RPM * scale)
    result(
        "P1",
        "3021 responses provoked",
        limited,
        "= 0",
        limited == 0,
        shown=str(limited),
        note="vacuous: the run sent fewer requests than one minute's limit" if vacuous else "",
    )


if __name__ == "__main__":
    main()
