"""Read job files: YAML to a validated :class:`Job`, every problem as ``FILE:LINE: field: msg``.

Shape errors come from pydantic (:mod:`pipelines.job.spec`, :mod:`pipelines.job.shape`); the
rules that need the model catalog or several fields at once (:mod:`pipelines.job.checks`) run
in the same pass, on the fields that are valid. All problems are collected so a user fixes a
file in one pass, not one error per run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from pipelines.core.errors import JobError
from pipelines.job.checks import TOKEN_MESSAGE, check_job, is_token_key
from pipelines.job.problems import Problems
from pipelines.job.problems import format_loc as format_loc
from pipelines.job.shape import validate_all
from pipelines.job.spec import Job
from pipelines.job.yamldoc import compose, read_text, walk

JOB_SUFFIXES = (".yaml", ".yml")


def inspect_job(path: str | os.PathLike[str]) -> tuple[Job | None, Problems]:
    """Read one job file and find every problem in it, without raising for them.

    Returns the job (built from its valid parts when there are problems: a field that
    ``problems`` holds unknown has a stand-in value) and the problems; ``None`` for the job
    when not even that can be built. A file that cannot be read or parsed at all raises a
    :class:`JobError` (one line)."""
    p, shown = Path(path), str(path)
    text = read_text(p, shown)
    data, node = compose(text, shown)
    if node is None or data is None:
        raise JobError(
            f"{shown}:1: the job file is empty; a job needs name, source, task and output "
            "(see: pipelines schema)"
        )
    if not isinstance(data, dict):
        line = node.start_mark.line + 1
        raise JobError(
            f"{shown}:{line}: a job file must be a YAML mapping of keys to values, "
            f"not a {type(data).__name__}"
        )
    problems = Problems(file=shown)
    walk(node, problems, flag_key=(is_token_key, TOKEN_MESSAGE))
    # unknown keys that look like credentials were reported with the credentials message
    job = validate_all(Job, data, problems, skip=lambda loc: bool(loc) and is_token_key(loc[-1]))
    if job is None:
        return None, problems
    return check_job(job.located(p), data, problems), problems


def _load(path: str | os.PathLike[str]) -> tuple[Job, Problems]:
    job, problems = inspect_job(path)
    problems.raise_if_any()
    if job is None:
        raise AssertionError("unreachable: validation failed without problems")
    return job, problems


def load_job(path: str | os.PathLike[str]) -> Job:
    """Read and fully validate one job file; raises :class:`JobError` listing every problem."""
    return _load(path)[0]


def job_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand folders to the ``*.yaml``/``*.yml`` files directly inside them."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix in JOB_SUFFIXES and f.is_file())
            if not found:
                raise JobError(f"{raw}: no job files (*.yaml, *.yml) in this folder")
            out.extend(found)
        else:
            out.append(p)
    return out


def load_jobs(paths: Iterable[str | os.PathLike[str]]) -> list[Job]:
    """Load files and folders of jobs, highest ``priority`` first, then by name.

    Problems in all the files are reported together; job names must be unique because
    they key each job's state.
    """
    loaded: list[tuple[Job, Problems]] = []
    errors: list[str] = []
    for p in job_files(paths):
        try:
            loaded.append(_load(p))
        except JobError as exc:
            errors.append(exc.message)
    first: dict[str, str] = {}
    for job, problems in loaded:
        if job.name in first:
            problems.add(("name",), f"{job.name!r} is also the name of {first[job.name]}")
            errors.append(problems.render())
        first.setdefault(job.name, problems.file)
    if errors:
        raise JobError("\n".join(errors))
    return sorted((job for job, _ in loaded), key=lambda j: (-j.priority, j.name))
