"""R1: crashes at exit of ``pipelines validate`` and ``pipelines status`` on a 20,000-row CSV
(goal: 0 non-zero exits in 200 runs of each).

Both commands read the CSV with pyarrow and exit at once. They used to abort at exit now
and then (rc 134, "terminate called without an active exception"): pyarrow released a
reader on one of its own threads while the interpreter was shutting down, and the reader
held a Python object. How often depends on timing, so the runs go ``--jobs`` at a time
(default twice the CPUs: a loaded machine made it more frequent, 4 in 25 on a busy box).
Each run is a fresh process of this checkout; any non-zero exit counts, and the first
one's stderr is shown.

    python3 benchmarks/exit_crash.py [--short] [--runs 200] [--jobs 4]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import BGE, ROOT, result, text_frame

ROWS = 20_000
COMMANDS = ("validate", "status")
# Twice the CPUs: a loaded machine is where the crash showed (and the runs go faster).
JOBS = max(4, 2 * (os.cpu_count() or 2))


def write_job(folder: Path) -> Path:
    """A 20,000-row CSV and an embed job that reads it."""
    text_frame(ROWS).write_csv(folder / "corpus.csv")
    job = folder / "job.yaml"
    job.write_text(
        "name: exit-crash\n"
        "source: {kind: csv, path: corpus.csv, key: doc_id}\n"
        f'task: {{kind: embed, model: "{BGE}", input: text}}\n'
        "output: {path: out/result.parquet}\n",
        encoding="utf-8",
    )
    return job


def run_once(command: str, job: Path, env: dict[str, str]) -> tuple[int, str]:
    """Exit code and stderr of one ``pipelines <command> <job>`` process."""
    done = subprocess.run(
        [sys.executable, "-m", "pipelines", command, str(job)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return done.returncode, done.stderr


def count_failures(command: str, job: Path, env: dict[str, str], runs: int, jobs: int) -> int:
    """How many of ``runs`` processes exited non-zero (``jobs`` at a time)."""
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        outcomes = list(pool.map(lambda _: run_once(command, job, env), range(runs)))
    failed = [(code, err) for code, err in outcomes if code != 0]
    codes = sorted({code for code, _ in failed})
    print(f"pipelines {command}: {len(failed)} of {runs} runs exited non-zero {codes or ''}")
    if failed:
        print("  first one's stderr: " + failed[0][1].strip()[-600:])
    return len(failed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="5 runs of each command (CI)")
    parser.add_argument("--runs", type=int, default=None, help="runs per command (default 200)")
    parser.add_argument(
        "--jobs", type=int, default=JOBS, help=f"processes at a time (default {JOBS})"
    )
    args = parser.parse_args()
    runs = args.runs or (5 if args.short else 200)
    if runs < 1 or args.jobs < 1:
        parser.error("--runs and --jobs must be at least 1")

    with tempfile.TemporaryDirectory(prefix="pipelines-exit-") as tmp:
        folder = Path(tmp)
        job = write_job(folder)
        env = dict(os.environ)
        # this checkout's package, and a state folder of its own
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        env["PIPELINES_STATE_DIR"] = str(folder / "state")
        for name in ("CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_TOKEN"):
            env.pop(name, None)
        code, err = run_once("validate", job, env)
        if code != 0:
            raise SystemExit(f"pipelines validate does not accept the job: {err}")
        failures = {c: count_failures(c, job, env, runs, args.jobs) for c in COMMANDS}
    total = sum(failures.values())
    result(
        "R1",
        f"non-zero exits of validate and status on {ROWS:,} CSV rows, {runs} runs each",
        total,
        "0",
        total == 0,
        shown=f"{total} of {runs * len(COMMANDS)}",
        extra={"runs": runs, "jobs": args.jobs, **failures},
    )


if __name__ == "__main__":
    main()
