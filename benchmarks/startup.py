"""P6: start-up time of ``pipelines --version`` ÷ that of ``python -c "import click"``
(goal: at most 2).

Both commands run as fresh processes from this checkout, side by side: each round starts
one of each, the order alternating between rounds so that neither always runs on a warmer
machine, after one unmeasured round that fills the file-system and bytecode caches. The
figure is the ratio of the two medians, so the interpreter's own start-up (the bulk of the
baseline) counts on both sides and a slow machine moves both alike.

    python3 benchmarks/startup.py [--short] [--runs 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from common import ROOT, result

GOAL = 2.0
PIPELINES = [sys.executable, "-m", "pipelines", "--version"]
CLICK = [sys.executable, "-c", "import click"]


def wall_s(cmd: list[str], env: dict[str, str]) -> float:
    """Seconds from spawn to exit of ``cmd``; fails loudly if it fails."""
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr}")
    return elapsed


def measure(runs: int, env: dict[str, str]) -> tuple[list[float], list[float]]:
    """``runs`` interleaved wall times of each command (``pipelines``, ``click``)."""
    wall_s(PIPELINES, env)
    wall_s(CLICK, env)
    ours: list[float] = []
    base: list[float] = []
    for i in range(runs):
        pair = [(PIPELINES, ours), (CLICK, base)]
        for cmd, times in pair if i % 2 == 0 else reversed(pair):
            times.append(wall_s(cmd, env))
    return ours, base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="5 rounds (CI)")
    parser.add_argument("--runs", type=int, default=None, help="rounds (default 40)")
    args = parser.parse_args()
    runs = args.runs or (5 if args.short else 40)
    if runs < 1:
        parser.error("--runs must be at least 1")

    env = dict(os.environ)
    # this checkout's package, not whichever copy an editable install points at
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    version = subprocess.run(
        PIPELINES, cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    ours, base = measure(runs, env)
    ours_s, base_s = statistics.median(ours), statistics.median(base)
    ratio = ours_s / base_s
    print(f"{version.stdout.strip()}; Python {sys.version.split()[0]}; {runs} rounds")
    print(
        f"python -m pipelines --version: median {ours_s * 1000:.0f} ms "
        f"(min {min(ours) * 1000:.0f}, max {max(ours) * 1000:.0f})"
    )
    print(
        f'python -c "import click":      median {base_s * 1000:.0f} ms '
        f"(min {min(base) * 1000:.0f}, max {max(base) * 1000:.0f})"
    )
    result(
        "P6",
        "start-up, pipelines --version ÷ python -c 'import click'",
        ratio,
        f"≤ {GOAL:g}",
        ratio <= GOAL,
        shown=f"{ratio:.2f} ({ours_s * 1000:.0f} ms vs {base_s * 1000:.0f} ms)",
        extra={"pipelines_s": ours_s, "click_s": base_s, "runs": runs},
    )


if __name__ == "__main__":
    main()
