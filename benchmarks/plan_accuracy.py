"""``plan``'s neuron estimate ÷ the emulator's billing, for each sample job (goal ±3 %).

Each job in ``jobs/`` (text jobs; audio too once it lands) is copied to a temporary folder
with its output redirected there, planned with :func:`pipelines.run.plan.plan_job`, then run
through the CLI against a fresh in-process emulator; the ratio of the plan's neurons to the
neurons the emulator billed is printed per job.

    python3 benchmarks/plan_accuracy.py [--jobs jobs] [--short]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from pipelines.emulator import EmulatorConfig, running_emulator
from pipelines.job.load import load_job
from pipelines.run.plan import plan_job

ROOT = Path(__file__).resolve().parent.parent


def relocate(job_path: Path, folder: Path) -> Path:
    """A copy of the job whose source points at the original data and output into folder."""
    raw = yaml.safe_load(job_path.read_text())
    raw["source"]["path"] = str((job_path.parent / raw["source"]["path"]).resolve())
    raw["output"]["path"] = str(folder / "out" / Path(raw["output"]["path"]).name)
    raw.pop("budget", None)  # measure the estimate, not the cap
    copy = folder / job_path.name
    copy.write_text(yaml.safe_dump(raw))
    return copy


def measure(job_path: Path, folder: Path) -> tuple[str, float, float]:
    job_copy = relocate(job_path, folder)
    job = load_job(job_copy)
    estimate = plan_job(job).neurons
    with running_emulator(EmulatorConfig(daily_neurons=1e9, rpm_scale=100)) as emu:
        env = {
            **os.environ,
            "CLOUDFLARE_ACCOUNT_ID": "bench",
            "CLOUDFLARE_API_TOKEN": "bench",
            "CLOUDFLARE_API_BASE_URL": emu.base_url,
            "PIPELINES_STATE_DIR": str(folder / "state"),
        }
        cmd = [sys.executable, "-m", "pipelines", "run", "--no-progress", str(job_copy)]
        subprocess.run(cmd, env=env, capture_output=True, check=False)
        billed = float(emu.stats()["neurons_today"])
    return job.name, estimate, billed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=Path, default=ROOT / "jobs")
    args = parser.parse_args()
    print(f"{'job':28} {'plan':>12} {'billed':>12} {'plan/billed':>12}")
    worst = 0.0
    for job_path in sorted(args.jobs.glob("*.yaml")):
        with tempfile.TemporaryDirectory() as tmp:
            name, estimate, billed = measure(job_path, Path(tmp))
            shutil.rmtree(Path(tmp) / "out", ignore_errors=True)
        ratio = estimate / billed if billed else float("nan")
        worst = max(worst, abs(ratio - 1.0)) if billed else worst
        print(f"{name:28} {estimate:12.3f} {billed:12.3f} {ratio:12.4f}")
    print(f"worst deviation: {worst * 100:.2f} % (goal: within 3 %)")


if __name__ == "__main__":
    main()
