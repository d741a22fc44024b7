"""Read job files: YAML to a validated :class:`Job`, every problem as ``FILE:LINE: field: msg``.

Shape errors come from pydantic (:mod:`pipelines.job.spec`); the rules that need the model
catalog or several fields at once are checked here, after the shape is right. All problems
are collected so a user fixes a file in one pass, not one error per run.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pipelines.core.errors import JobError
from pipelines.job.checks import TOKEN_MESSAGE, check_job, is_token_key
from pipelines.job.problems import Loc, Problems
from pipelines.job.problems import format_loc as format_loc
from pipelines.job.spec import Job

JOB_SUFFIXES = (".yaml", ".yml")
# A job file holds a few dozen values; YAML aliases can make a small file expand to billions
# ("billion laughs"), which would take hours to walk and validate.
MAX_VALUES = 10_000


def _read_text(path: Path, shown: str) -> str:
    if path.is_dir():
        raise JobError(f"{shown}: is a directory; give a job file (.yaml)")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise JobError(f"{shown}: no such job file") from None
    except OSError as exc:
        raise JobError(f"{shown}: cannot read the job file: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise JobError(f"{shown}:{line}: the job file is not UTF-8 text") from None


def _compose(text: str, shown: str) -> tuple[Any, yaml.Node | None]:
    """Parse once, keeping the node tree (for line numbers) and the plain data."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{shown}:{mark.line + 1}" if mark else shown
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        col = f" (column {mark.column + 1})" if mark else ""
        raise JobError(f"{where}: invalid YAML: {what}{col}") from None
    except yaml.YAMLError as exc:
        raise JobError(f"{shown}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return data, node


def _walk(node: yaml.Node, loc: Loc, problems: Problems, stack: set[int]) -> None:
    """Record each key's line; flag duplicate keys and credentials on the way."""
    if id(node) in stack:  # a recursive alias; the data itself is checked by pydantic
        return
    problems.values += 1
    if problems.values > MAX_VALUES:
        raise JobError(
            f"{problems.file}:{node.start_mark.line + 1}: the job file holds more than "
            f"{MAX_VALUES:,} values once its YAML aliases (*name) are expanded; "
            "a job needs a few dozen: remove the aliases"
        )
    stack.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                _walk(value, loc, problems, stack)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = str(key_node.value)
            here = (*loc, key)
            problems.lines[here] = key_node.start_mark.line + 1
            if key in seen:
                problems.add(here, "duplicate key (the later value would silently win)")
            seen.add(key)
            if is_token_key(key):
                problems.add(here, TOKEN_MESSAGE)
            _walk(value, here, problems, stack)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            problems.lines.setdefault((*loc, i), item.start_mark.line + 1)
            _walk(item, (*loc, i), problems, stack)
    stack.discard(id(node))


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The pydantic model that owns the mapping at ``loc`` (for "expected one of")."""
    model: type[BaseModel] = Job
    for part in loc:
        info = model.model_fields.get(str(part))
        sub = info.annotation if info else None
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            return None
        model = sub
    return model


def _pydantic_message(err: Any) -> str:
    kind, loc, msg = err["type"], tuple(err["loc"]), str(err["msg"])
    if kind == "extra_forbidden":
        owner = _model_at(loc[:-1])
        if owner is None:
            return "unknown key"
        known = list(owner.model_fields)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key ({hint}expected one of: {', '.join(known)})"
    if kind == "missing":
        return "required key is missing"
    if kind == "string_pattern_mismatch" and loc == ("name",):
        return "use letters, digits, '.', '_' and '-', starting with a letter or digit"
    text = msg[:1].lower() + msg[1:]
    value = err.get("input")
    if kind == "literal_error" and isinstance(value, str | int | float | bool):
        text += f" (got {value!r})"
    return text


def _validate(data: dict[str, Any], problems: Problems) -> Job | None:
    try:
        return Job.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            if err["type"] == "extra_forbidden" and loc and is_token_key(loc[-1]):
                continue  # already reported with the credentials message
            problems.add(loc, _pydantic_message(err))
        return None


# Request fields the runner fills from each row; a job cannot fix them in params.
def _load(path: Path, shown: str) -> tuple[Job, Problems]:
    text = _read_text(path, shown)
    data, node = _compose(text, shown)
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
    _walk(node, (), problems, set())
    job = _validate(data, problems)
    if job is None:
        problems.raise_if_any()
        raise AssertionError("unreachable: validation failed without problems")
    job = check_job(job.located(path), data, problems)
    problems.raise_if_any()
    return job, problems


def load_job(path: str | os.PathLike[str]) -> Job:
    """Read and fully validate one job file; raises :class:`JobError` listing every problem."""
    p = Path(path)
    return _load(p, str(path))[0]


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
            loaded.append(_load(p, str(p)))
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
