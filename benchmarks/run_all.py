"""Run every benchmark one after the other and print a table: figure, goal, met or missed.

Each benchmark runs as its own process, its output shown as it goes; the figures come from
its ``RESULT`` lines (or, for the two older scripts, from their summary lines). One bench
that crashes is reported as such and the others still run.

    python3 benchmarks/run_all.py [--short] [--only P1,P3,...]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import ROOT, parse_results

HERE = Path(__file__).resolve().parent


def _emulator_speed(output: str) -> list[dict[str, Any]]:
    found = re.search(r"loopback HTTP: median ([\d.]+) ms/request", output)
    if found is None:
        return []
    value = float(found.group(1))
    return [
        {
            "bench": "E1",
            "figure": "emulator: median ms per 100-text request",
            "value": value,
            "shown": f"{value:.2f} ms",
            "goal": "—",
            "met": None,
        }
    ]


def _plan_accuracy(output: str) -> list[dict[str, Any]]:
    found = re.search(r"worst deviation: ([\d.]+) %", output)
    if found is None:
        return []
    value = float(found.group(1))
    rows = [
        {
            "bench": "E2",
            "figure": "plan: worst deviation from billed neurons",
            "value": value,
            "shown": f"{value:.2f} %",
            "goal": "within 3 %",
            "met": value <= 3.0,
        }
    ]
    lowest = re.search(r"lowest plan / independent count: ([\d.]+)", output)
    if lowest is not None:
        ratio = float(lowest.group(1))
        rows.append(
            {
                "bench": "E2",
                "figure": "plan ÷ independent token count, lowest",
                "value": ratio,
                "shown": f"{ratio:.4f}",
                "goal": "at least 0.97",
                "met": ratio >= 0.97,
            }
        )
    return rows


@dataclass
class Bench:
    id: str
    script: str
    short: list[str]
    full: list[str]
    parse: Callable[[str], list[dict[str, Any]]] = parse_results


BENCHES = [
    Bench("E1", "emulator_speed.py", ["--requests", "50"], [], _emulator_speed),
    Bench("E2", "plan_accuracy.py", [], [], _plan_accuracy),
    Bench("E3", "emulator_startup.py", ["--short"], []),
    Bench("E4", "transcribe.py", ["--short"], []),
    Bench("G1", "generate_plan.py", ["--short"], []),
    Bench("B1", "batch_mode.py", ["--short"], []),
    Bench("T1", "token_accuracy.py", ["--short"], []),
    Bench("P1", "rate_limit.py", ["--short"], []),
    Bench("P2", "packing.py", ["--short"], []),
    Bench("P3", "client_cpu.py", ["--short"], []),
    Bench("P4", "memory.py", ["--short"], []),
    Bench("P5", "wall_time.py", ["--short"], []),
    Bench("P6", "startup.py", ["--short"], []),
    Bench("R1", "exit_crash.py", ["--short"], []),
    Bench("R2", "big_fields.py", ["--short"], []),
]


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip() + (" (with local changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _run(bench: Bench, short: bool) -> tuple[list[dict[str, Any]], float, int]:
    cmd = [sys.executable, str(HERE / bench.script), *(bench.short if short else bench.full)]
    shown = " ".join([f"benchmarks/{bench.script}", *cmd[2:]])
    print(f"\n=== {bench.id}: python3 {shown}", flush=True)
    started = time.monotonic()
    process = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if not line.startswith("RESULT "):
            print(line, end="", flush=True)
    code = process.wait()
    return bench.parse("".join(lines)), time.monotonic() - started, code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="every bench's short mode")
    parser.add_argument("--only", default="", help="comma-separated ids, e.g. P1,P3")
    args = parser.parse_args()
    only = {s.strip().upper() for s in args.only.split(",") if s.strip()}
    chosen = [b for b in BENCHES if not only or b.id in only]

    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; commit {_git_commit()}; "
        f"Python {platform.python_version()}; {os.cpu_count()} CPUs; "
        f"{'short' if args.short else 'full'} mode"
    )
    rows: list[dict[str, Any]] = []
    crashed = []
    for bench in chosen:
        results, seconds, code = _run(bench, args.short)
        print(f"--- {bench.id} took {seconds:.0f} s (exit {code})")
        if code != 0 or not results:
            crashed.append(bench.id)
            failed = {"figure": bench.script, "shown": f"crashed (exit {code})", "goal": ""}
            rows.append({"bench": bench.id, **failed, "met": False})
        rows.extend(results)

    print("\n| bench | figure | measured | goal | |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        verdict = "—" if r["met"] is None else ("met" if r["met"] else "**missed**")
        print(f"| {r['bench']} | {r['figure']} | {r['shown']} | {r['goal']} | {verdict} |")
    missed = [f"{r['bench']} {r['figure']}" for r in rows if r["met"] is False]
    print(f"\n{len(rows) - len(missed)} of {len(rows)} figures met or informational", end="")
    print(f"; missed: {', '.join(missed)}" if missed else "")
    if crashed:
        sys.exit(1)


if __name__ == "__main__":
    main()
