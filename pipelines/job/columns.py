"""Columns a job may not read or keep: the ones pipelines writes into every output row.

Each output row holds the row key (``_key``), the hash of its input (``_hash``) and the
result columns of the job's task kind.
An input column of one of those names would be silently replaced: read as ``task.input``,
the model would get the row ids; kept, the output would hold two columns of one name (the
run used to crash, or hang). Such a job is refused when it is loaded, at the field that names
the column. ``source.key`` may be ``_key`` (a previous output's key): it only keys the rows.
"""

from __future__ import annotations

from pipelines.core.columns import KEY, ROW_HASH
from pipelines.job.problems import Loc, Problems
from pipelines.job.spec import Job
from pipelines.job.templates import template_columns

# The result columns of each task kind: the names of its family's ``fields`` (pipelines/tasks).
# The job layer sits below the tasks, so it cannot ask them; tests/test_job_file_problems.py
# builds every family with every catalog model of its kind and checks these are its names.
RESULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "embed": ("embedding",),
    "classify": ("label", "score"),
    "translate": ("translated_text",),
    "transcribe": ("path", "duration_s", "text", "word_count", "language", "vtt", "words"),
    # without an output_schema; with one, its properties replace "response"
    "generate": ("response", "prompt_tokens", "completion_tokens", "finish_reason", "truncated"),
    # the Parquet index of an image job's files (pipelines/tasks/image.py)
    "image": (
        "file",
        "sha256",
        "bytes",
        "width",
        "height",
        "format",
        "seed",
        "model",
        "steps",
        "prompt",
        "negative_prompt",
    ),
}
# Results that are the input's own column of the same name (an audio source's ``path`` and
# ``duration_s``): keeping that column is no clash, the family then leaves its copy out.
FROM_INPUT: dict[str, tuple[str, ...]] = {"transcribe": ("path", "duration_s")}


def added_columns(kind: str) -> dict[str, str]:
    """The columns pipelines writes into a ``kind`` job's rows whatever the input holds
    (no input column may have their names), and what each holds."""
    added = {KEY: "each row's key", ROW_HASH: "a hash of what each row's result was made from"}
    own = (n for n in RESULT_COLUMNS.get(kind, ()) if n not in FROM_INPUT.get(kind, ()))
    article = "an" if kind[:1] in ("a", "e", "i", "o", "u") else "a"
    added.update((name, f"{article} {kind} result") for name in own)
    return added


def _named(job: Job) -> list[tuple[Loc, str | None]]:
    task = job.task
    # a template reading ``_key`` would get the row key, not the input column of that name
    where: Loc = ("task", "prompt") if task.prompt is not None else ("task", "messages")
    read = [c for c in template_columns(task.templates()) if c in (KEY, ROW_HASH)]
    # a seed column is read, never written over: only the key and the hash would shadow it
    seed = task.seed_column if task.seed_column in (KEY, ROW_HASH) else None
    return [
        *((where, name) for name in read),
        (("task", "input"), task.input),
        (("task", "seed_column"), seed),
        (("task", "source_lang_column"), task.source_lang_column),
        (("task", "target_lang_column"), task.target_lang_column),
        *((("output", "keep", i), name) for i, name in enumerate(job.output.keep)),
    ]


def check_columns(job: Job, problems: Problems) -> None:
    """Refuse every column the job reads or keeps that pipelines writes itself."""
    kind_known = problems.known(("task", "kind"))
    added = added_columns(job.task.kind) if kind_known else added_columns("")
    for loc, name in _named(job):
        if name is None or name not in added or not problems.known(loc[:2]):
            continue
        fix = "rename it in the input"
        if loc[0] == "output":
            fix = f"drop it from output.keep, or {fix}"
        problems.add(
            loc,
            f"{name!r} is a column pipelines writes into every output row ({added[name]}), "
            f"so an input column of that name would be lost; {fix}",
        )
