"""G1: ``plan``'s range for text generation against the emulator's bill.

A generation's price depends on how long its answer is, so ``plan`` gives a floor (every
answer empty), a ceiling (every answer ``max_tokens`` long) and an expected figure (answers
as long as those of the rows already done, or ``max_tokens / 2`` before any). This script
runs the sample job ``jobs/review_insights.yaml`` (JSON mode, llama-3.1-8b) in two steps
against a fresh in-process emulator: its first ``--first`` rows (100), then the rest. For
each step it compares the plan made just before with the neurons the emulator billed:

- floor ≤ bill ≤ ceiling, for both steps and for the same prompt on other models (each
  JSON-mode form and request form: guided_json, chat completions, harmony);
- the expected figure for the rest, made after the first rows are done, within ±15 % of the
  bill.

The emulator counts prompt tokens with the plan's own function, so the script also prices
the rendered prompts with an independent count: the calibrated estimator, a different
method from the exact tokenizer the plan uses when the ``tokens`` extra is installed.

    python3 benchmarks/generate_plan.py [--short]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from common import ROOT, result

from pipelines.catalog.chat import template_overhead
from pipelines.catalog.models import get_model
from pipelines.catalog.tokens import counting_source, tokenizer_facts
from pipelines.emulator import EmulatorConfig, running_emulator
from pipelines.job.load import load_job
from pipelines.providers.registry import emulator_label
from pipelines.run.plan import Plan, plan_job

SAMPLE = ROOT / "jobs" / "review_insights.yaml"
OTHER_MODELS = (
    "@cf/mistralai/mistral-small-3.1-24b-instruct",  # guided_json
    "@cf/qwen/qwen3-30b-a3b-fp8",  # chat completions, OpenAI JSON form
    "@cf/openai/gpt-oss-20b",  # harmony template
)


def job_copy(folder: Path, data: Path, model: str | None = None) -> Path:
    raw: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    raw["source"]["path"] = str(data)
    raw["output"]["path"] = str(folder / "out" / "insights.parquet")
    if model is not None:
        raw["task"]["model"] = model
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run(job: Path, emu_url: str, state: Path) -> None:
    env = {
        **os.environ,
        "CLOUDFLARE_ACCOUNT_ID": "bench-generate",
        "CLOUDFLARE_API_TOKEN": "bench-generate-token",
        "CLOUDFLARE_API_BASE_URL": emu_url,
        "PIPELINES_STATE_DIR": str(state),
    }
    cmd = [sys.executable, "-m", "pipelines", "run", "--no-progress", str(job)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"pipelines run exited {done.returncode}: {done.stderr[-2000:]}")


def step(job: Path, emu: Any, state: Path) -> tuple[Plan, float]:
    """The plan just before a run, and what that run was billed."""
    os.environ["PIPELINES_STATE_DIR"] = str(state)
    loaded = load_job(job)
    # the run's answers are the emulator's: so are the cached ones the plan may count
    plan = plan_job(loaded, produced_by=emulator_label(get_model(loaded.task.model)))
    before = float(emu.stats()["neurons_today"])
    run(job, emu.base_url, state)
    return plan, float(emu.stats()["neurons_today"]) - before


def independent_prompt_ratio(job: Path) -> float:
    """Prompt tokens the plan counts ÷ the calibrated estimator's count, over the rows."""
    loaded = load_job(job)
    model = get_model(loaded.task.model)
    estimator = tokenizer_facts(model.tokenizer).estimator
    out = pl.read_parquet(loaded.output_path)
    frame = pl.read_parquet(loaded.resolve(loaded.source.path)).join(
        out.select("review_id", "prompt_tokens"), on="review_id"
    )
    ours = indep = 0
    system = loaded.task.system or ""
    for stars, text, tokens in frame.select("stars", "text", "prompt_tokens").iter_rows():
        user = f"A customer gave {stars} stars out of 5 and wrote:\n{text}\n"
        assert estimator is not None
        indep += estimator.count(system) + estimator.count(user) + template_overhead(model, 2)
        ours += tokens
    return ours / indep


def check_range(name: str, plan: Plan, billed: float) -> bool:
    inside = plan.neurons_floor <= billed + 1e-6 and billed <= plan.neurons_ceiling + 1e-6
    print(
        f"{name:48} floor {plan.neurons_floor:9.2f}  expected {plan.neurons:9.2f}  "
        f"ceiling {plan.neurons_ceiling:9.2f}  billed {billed:9.2f}  "
        f"{'inside' if inside else 'OUTSIDE'}"
    )
    return inside


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", type=int, default=100, help="rows of the first step")
    parser.add_argument("--short", action="store_true", help="the sample model only")
    args = parser.parse_args()
    full = pl.read_parquet(ROOT / "sample_data" / "reviews.parquet")
    model = get_model(yaml.safe_load(SAMPLE.read_text())["task"]["model"])
    print(f"prompt tokens: {counting_source(model.tokenizer)}")
    all_inside = True
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_emulator(EmulatorConfig(daily_neurons=1e9, rpm_scale=100)) as emu,
    ):
        folder = Path(tmp)
        data = folder / "reviews.parquet"
        full.head(args.first).write_parquet(data)
        job = job_copy(folder, data)
        plan, billed = step(job, emu, folder / "state")
        all_inside &= check_range(f"first {args.first} rows", plan, billed)
        full.write_parquet(data)  # the same first rows, then the rest
        plan, billed = step(job, emu, folder / "state")
        all_inside &= check_range(f"the other {full.height - args.first} rows", plan, billed)
        error = plan.neurons / billed - 1.0
        ratio = independent_prompt_ratio(job)
        for other in () if args.short else OTHER_MODELS:
            sub = folder / other.rsplit("/", 1)[-1]
            sub.mkdir()
            plan_o, billed_o = step(job_copy(sub, data, other), emu, sub / "state")
            all_inside &= check_range(other, plan_o, billed_o)
    result(
        "G1",
        "generate: floor <= bill <= ceiling on every job",
        float(all_inside),
        "always",
        all_inside,
        shown="yes" if all_inside else "no",
    )
    result(
        "G1",
        "generate: expected vs bill after the first rows",
        error * 100,
        "within ±15 %",
        abs(error) <= 0.15,
        shown=f"{error * 100:+.1f}%",
    )
    result(
        "G1",
        "generate: plan prompt tokens ÷ independent estimate",
        ratio,
        "—",
        True,
        shown=f"{ratio:.3f}",
        note="the emulator bills the plan's own count",
    )


if __name__ == "__main__":
    main()
