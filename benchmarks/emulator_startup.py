"""How quickly ``pipelines emulator`` listens: spawn to its ``listening on`` line.

A parent process (a benchmark, a CI job, a user's script) waits for that line before it
sends anything, so this is the emulator's start-up cost as they see it: interpreter, imports
and binding. Runs the command ``--runs`` times and prints the median and the slowest.

    python3 benchmarks/startup.py [--runs 10] [--short]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from common import ROOT, result

GOAL_S = 3.0


def time_to_listen() -> float:
    """Seconds from spawning ``pipelines emulator --port 0`` to its ``listening on`` line."""
    cmd = [sys.executable, "-m", "pipelines", "emulator", "--port", "0"]
    start = time.monotonic()
    process = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        seconds = time.monotonic() - start
        if not line.startswith("listening on "):
            raise SystemExit(f"the emulator did not start: {line!r}")
        return seconds
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--short", action="store_true", help="3 runs")
    args = parser.parse_args()
    runs = 3 if args.short else args.runs
    times = [time_to_listen() for _ in range(runs)]
    median = statistics.median(times)
    print(
        f"pipelines emulator, spawn → listening, {runs} runs: "
        + ", ".join(f"{t:.2f}" for t in times)
        + " s"
    )
    result(
        "E3",
        "pipelines emulator: spawn to listening (median)",
        median,
        f"< {GOAL_S:.0f} s",
        median < GOAL_S,
        shown=f"{median:.2f} s",
        note=f"slowest {max(times):.2f} s of {runs}",
        extra={"runs": runs, "slowest_s": max(times)},
    )


if __name__ == "__main__":
    main()
