"""R2: a CSV with one very big field: ``pipelines validate`` reads it, and its peak memory
grows with the field, not beyond (goal: exit 0, and at most 6 × the field above a CSV
without it).

Three CSVs of 2,000 short rows each, one of them also with a 7 MB field and one with a
50 MB field in the middle; ``validate`` opens, checks and counts each (pyarrow parses
every byte). The 7 MB field fits the reader's 8 MiB parse block; the 50 MB one does not,
and used to be refused with pyarrow's "straddling object ... (try to increase block
size?)". The figure is the extra peak RSS over the CSV without a big field. ``plan`` on
the 7 MB CSV is measured too (informational: it also counts the field's tokens with the
model's tokenizer, which is where the time and memory of a big field go).

    python3 benchmarks/big_fields.py [--short]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from common import BGE, ROOT, Measured, measured_run, result

ROWS = 2_000
GOAL = 6.0  # extra peak RSS ÷ field size


def write_csv(path: Path, field_mb: float) -> None:
    """``ROWS`` short rows, with a field of ``field_mb`` MB in the middle (0: none)."""
    words = "river mountain city market music garden ocean winter "
    with path.open("w", encoding="utf-8") as out:
        out.write("doc_id,text\n")
        for i in range(ROWS):
            if field_mb and i == ROWS // 2:
                size = int(field_mb * 1_000_000)
                big = (words * (size // len(words) + 1))[:size]
                out.write(f'{i},"{big}"\n')
            else:
                out.write(f"{i},{words}{i}\n")


def write_job(folder: Path, name: str) -> Path:
    job = folder / f"{name}.yaml"
    job.write_text(
        f"name: {name}\nsource: {{kind: csv, path: {name}.csv, key: doc_id}}\n"
        f'task: {{kind: embed, model: "{BGE}", input: text, truncate: true}}\n'
        f"output: {{path: out/{name}.parquet}}\n",
        encoding="utf-8",
    )
    return job


def pipelines(command: str, job: Path, env: dict[str, str]) -> Measured:
    done = measured_run([sys.executable, "-m", "pipelines", command, str(job)], env, cwd=ROOT)
    if done.returncode != 0:
        print(done.stdout + done.stderr)
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="the 7 MB field only, no plan")
    args = parser.parse_args()
    sizes = {"none": 0.0, "field7": 7.0} if args.short else {"none": 0, "field7": 7, "field50": 50}

    with tempfile.TemporaryDirectory(prefix="pipelines-fields-") as tmp:
        folder = Path(tmp)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        env["PIPELINES_STATE_DIR"] = str(folder / "state")
        runs: dict[str, Measured] = {}
        for name, mb in sizes.items():
            write_csv(folder / f"{name}.csv", mb)
            runs[name] = pipelines("validate", write_job(folder, name), env)
            print(
                f"validate, {mb:g} MB field: exit {runs[name].returncode}, "
                f"{runs[name].wall_s:.1f} s, peak RSS {runs[name].max_rss_mb:.0f} MB"
            )
        if not args.short:
            plan = pipelines("plan", folder / "field7.yaml", env)
            print(
                f"plan, 7 MB field: exit {plan.returncode}, {plan.wall_s:.1f} s, "
                f"peak RSS {plan.max_rss_mb:.0f} MB (token counting included)"
            )
    base = runs["none"].max_rss_mb
    for name, mb in sizes.items():
        if not mb:
            continue
        extra = runs[name].max_rss_mb - base
        ok = runs[name].returncode == 0
        result(
            "R2",
            f"validate, one {mb:g} MB CSV field: extra peak RSS ÷ field size",
            extra / mb,
            f"exit 0, ≤ {GOAL:g}",
            ok and extra / mb <= GOAL,
            shown=f"{extra / mb:.1f} ({extra:.0f} MB over {base:.0f} MB; exit "
            f"{runs[name].returncode}, {runs[name].wall_s:.1f} s)",
            extra={"field_mb": mb, "extra_mb": extra, "exit": runs[name].returncode},
        )


if __name__ == "__main__":
    main()
