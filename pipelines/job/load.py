"""Read job files: YAML to a validated :class:`Job`, every problem as ``FILE:LINE: field: msg``.

Shape errors come from pydantic (:mod:`pipelines.job.spec`); the rules that need the model
catalog or several fields at once are checked here, after the shape is right. All problems
are collected so a user fixes a file in one pass, not one error per run.
"""

from __future__ import annotations

import difflib
import fnmatch
import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ValidationError

from pipelines.catalog import ModelInfo, get_model, has_model
from pipelines.errors import JobError
from pipelines.job.languages import describe_languages, normalize_language
from pipelines.job.spec import Job

Loc = tuple[str | int, ...]

TOKEN_MESSAGE = (
    "the API token comes from CLOUDFLARE_API_TOKEN or CLOUDFLARE_API_TOKEN_FILE, "
    "never from the job file"
)
# Secrets must never sit in a job file (they get committed and copied around).
_TOKEN_KEYS = frozenset(
    {
        "token",
        "api_token",
        "apitoken",
        "cloudflare_api_token",
        "cf_api_token",
        "api_key",
        "apikey",
        "auth_token",
        "access_token",
        "bearer_token",
    }
)
JOB_SUFFIXES = (".yaml", ".yml")
# A job file holds a few dozen values; YAML aliases can make a small file expand to billions
# ("billion laughs"), which would take hours to walk and validate.
MAX_VALUES = 10_000
# Work files are named after the output: ".<name>.pipelines", ".<name>.tmp-<pid>", ...
MAX_OUTPUT_NAME = 255 - 32


def is_token_key(key: object) -> bool:
    """Whether a mapping key looks like a place for a credential."""
    return isinstance(key, str) and key.strip().lower().replace("-", "_") in _TOKEN_KEYS


def format_loc(loc: Loc) -> str:
    """``("output", "keep", 2)`` as ``output.keep[2]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class Problems:
    """Problems found in one job file, each tied to a field and (through it) a line."""

    file: str
    lines: dict[Loc, int] = field(default_factory=dict)
    items: list[tuple[int, str, str]] = field(default_factory=list)
    values: int = 0  # nodes walked, aliases expanded

    def line(self, loc: Loc) -> int:
        """The line of ``loc``, or of its nearest parent the file spells out."""
        for end in range(len(loc), 0, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return 1

    def add(self, loc: Loc, message: str) -> None:
        """Record a problem with the field at ``loc``."""
        entry = (self.line(loc), format_loc(loc), message)
        if entry not in self.items:
            self.items.append(entry)

    def render(self) -> str:
        """One ``FILE:LINE: field: message`` line per problem, in file order."""
        rows = sorted(self.items, key=lambda item: item[0])
        return "\n".join(
            f"{self.file}:{line}: {name}: {msg}" if name else f"{self.file}:{line}: {msg}"
            for line, name, msg in rows
        )

    def raise_if_any(self) -> None:
        """Raise one :class:`JobError` carrying every problem found so far."""
        if self.items:
            raise JobError(self.render())


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
_RUNNER_FILLED = {
    "text": "the task.input column",
    "audio": "the audio files",
    "contexts": "the rows",
    "query": "the rows",
    "queries": "the rows",
    "documents": "the rows",
    "requests": "the rows (batching is automatic)",
}
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "array": (list,),
    "object": (dict,),
}
_TEXT_KINDS = ("embed", "classify", "translate")
# Params pipelines reads itself for transcribe jobs (cutting long recordings); never sent.
_CHUNK_PARAMS = ("chunk_max_mb", "chunk_max_seconds")


def input_properties(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Top-level request properties of a published input schema, across ``oneOf`` branches."""
    props: dict[str, dict[str, Any]] = {}
    for branch in [schema, *schema.get("oneOf", []), *schema.get("anyOf", [])]:
        if isinstance(branch, dict):
            for name, spec in (branch.get("properties") or {}).items():
                props.setdefault(name, spec if isinstance(spec, dict) else {})
    return props


def _check_value(spec: dict[str, Any], value: Any) -> str | None:
    if "enum" in spec and value not in spec["enum"]:
        return f"must be one of {', '.join(map(repr, spec['enum']))} (got {value!r})"
    wanted = _JSON_TYPES.get(str(spec.get("type")))
    if wanted and (
        not isinstance(value, wanted) or (isinstance(value, bool) and bool not in wanted)
    ):
        return f"must be a {spec['type']}"
    return None


def _check_params(job: Job, model: ModelInfo, problems: Problems) -> dict[str, Any]:
    """Check params against the model's schema; returns them with languages normalised."""
    props = input_properties(model.input_schema)
    allowed = sorted(k for k in props if k not in _RUNNER_FILLED)
    params = dict(job.task.params)
    for key, value in job.task.params.items():
        loc: Loc = ("task", "params", key)
        if is_token_key(key):
            continue  # reported while reading the file
        if job.task.kind == "transcribe" and key in _CHUNK_PARAMS:
            ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
            if not ok:
                problems.add(loc, "must be a positive number")
            continue
        if key in _RUNNER_FILLED and key in props:
            problems.add(loc, f"set by pipelines from {_RUNNER_FILLED[key]}; remove it")
        elif key not in props:
            accepts = f"it accepts: {', '.join(allowed)}" if allowed else "it takes no options"
            problems.add(loc, f"not an option of {model.id} ({accepts})")
        elif key in ("source_lang", "target_lang"):
            code = normalize_language(value) if isinstance(value, str) else None
            if code is None:
                problems.add(
                    loc, f"unsupported language {value!r}; use one of: {describe_languages()}"
                )
            else:
                params[key] = code
        elif (msg := _check_value(props[key], value)) is not None:
            problems.add(loc, msg)
    return params


def _check_translate(job: Job, params: dict[str, Any], problems: Problems) -> None:
    task = job.task
    for side in ("source", "target"):
        column = getattr(task, f"{side}_lang_column")
        if task.kind != "translate":
            if column is not None:
                problems.add(("task", f"{side}_lang_column"), "only used by translate jobs")
        elif column is not None and f"{side}_lang" in params:
            problems.add(
                ("task", "params", f"{side}_lang"),
                f"give params.{side}_lang (every row) or task.{side}_lang_column (per row), "
                "not both",
            )
    if task.kind == "translate" and "target_lang" not in params and not task.target_lang_column:
        problems.add(
            ("task", "params", "target_lang"),
            "translate jobs need params.target_lang (one language for every row) or "
            "task.target_lang_column (a column with each row's language)",
        )
    src, dst = params.get("source_lang"), params.get("target_lang")
    if src is not None and src == dst:
        problems.add(("task", "params", "target_lang"), f"same as source_lang ({src!r})")


def _resolved(path: Path) -> Path:
    """``path.resolve()``, or just made absolute where symbolic links loop (that error is
    for the source or the output to report, with what to do)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):
        return Path(os.path.abspath(path))


def _check_paths(job: Job, problems: Problems) -> None:
    src = job.resolve(job.source.path)
    out = _resolved(job.output_path)
    if any(ch in job.source.path for ch in "*?["):
        matches = {_resolved(Path(p)) for p in glob.glob(str(src), recursive=True)}
        pattern = os.path.normpath(src)
        clash = out in matches or fnmatch.fnmatch(os.path.normpath(job.output_path), pattern)
    elif src.is_dir():
        clash = _resolved(src) in out.parents and out.suffix in (".csv", ".parquet", ".pq")
    else:
        clash = _resolved(src) == out
    if clash:
        problems.add(
            ("output", "path"),
            "would overwrite or be read back as the input (source.path); write elsewhere",
        )
    if len(set(job.output.keep)) != len(job.output.keep):
        problems.add(("output", "keep"), "lists a column twice")


def _check_model(job: Job, problems: Problems) -> ModelInfo | None:
    task = job.task
    if not has_model(task.model):
        problems.add(("task", "model"), f"unknown model {task.model!r} (see: pipelines models)")
        return None
    model = get_model(task.model)
    if model.task == "rerank":
        problems.add(
            ("task", "model"),
            f"{model.id} is a reranker; reranking is not a job task "
            "(jobs embed, classify, translate or transcribe)",
        )
        return None
    if model.task != task.kind:
        problems.add(
            ("task", "model"),
            f"{model.id} is a model for {model.task}, not {task.kind} "
            f"(set task.kind: {model.task}, or pick another model: pipelines models)",
        )
        return None
    if job.limits.batch_size is not None and job.limits.batch_size > model.max_items:
        problems.add(
            ("limits", "batch_size"),
            f"{job.limits.batch_size} is over {model.id}'s limit of {model.max_items} "
            f"item{'s' if model.max_items != 1 else ''} per request",
        )
    return model


def _url_problem(url: str) -> str | None:
    """Why ``url`` cannot be an API base URL, or ``None``."""
    if not url.startswith(("http://", "https://")):
        return "must start with http:// or https://"
    try:
        parts = urlsplit(url)
        _ = parts.port  # out of range: ValueError
    except ValueError as exc:
        return f"is not a valid URL ({exc}); e.g. http://127.0.0.1:8787/client/v4"
    if not parts.hostname or any(ch.isspace() or ch == "\0" for ch in url):
        return "is not a valid URL (no host name, or spaces in it)"
    return None


def _at(job: Job, loc: tuple[str, str]) -> str:
    return str(getattr(getattr(job, loc[0]), loc[1]))


def _check(job: Job, data: dict[str, Any], problems: Problems) -> Job:
    """The rules that span fields or need the catalog; returns the job, normalised."""
    task, raw_source = job.task, data.get("source") or {}
    model = _check_model(job, problems)
    if task.kind in _TEXT_KINDS and not task.input:
        problems.add(("task", "input"), f"required for {task.kind} jobs: the text column")
    if task.kind == "transcribe" and task.input is not None:
        problems.add(("task", "input"), "not used by transcribe jobs (audio files are the input)")
    if task.kind == "transcribe" and job.source.kind != "audio":
        problems.add(("source", "kind"), "transcribe jobs read audio: set source.kind: audio")
    if task.kind != "transcribe" and job.source.kind == "audio":
        problems.add(("source", "kind"), "audio sources only work with task.kind: transcribe")
    if job.source.kind == "audio" and job.source.key is not None:
        problems.add(
            ("source", "key"),
            "audio rows are keyed by their path relative to source.path; remove source.key",
        )
    for key, kind in (("delimiter", "csv"), ("encoding", "csv"), ("extensions", "audio")):
        if key in raw_source and job.source.kind != kind:
            problems.add(("source", key), f"only applies to {kind} sources")
    for key in ("vtt", "srt"):
        if getattr(job.output, key) and task.kind != "transcribe":
            problems.add(("output", key), "only transcribe jobs write subtitles")
    if job.budget.reserve >= job.budget.daily_neurons:
        problems.add(("budget", "reserve"), "must be below budget.daily_neurons")
    if job.base_url is not None and (why := _url_problem(job.base_url)) is not None:
        problems.add(("base_url",), why)
    params = _check_params(job, model, problems) if model else dict(task.params)
    _check_translate(job, params, problems)
    nul = [loc for loc in (("source", "path"), ("output", "path")) if "\0" in _at(job, loc)]
    for loc in nul:
        problems.add(loc, "contains a NUL character (\\0), which no file name can hold")
    if not nul:
        _check_paths(job, problems)
    name = Path(job.output.path).name.encode("utf-8", "surrogateescape")
    if len(name) > MAX_OUTPUT_NAME:
        problems.add(
            ("output", "path"),
            f"the file name is {len(name)} bytes long; keep it to {MAX_OUTPUT_NAME} (file "
            "systems allow 255, and pipelines names its work files after it)",
        )
    if params == task.params:
        return job
    fixed = job.model_copy(update={"task": task.model_copy(update={"params": params})})
    return fixed.located(job.file or Path("."))


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
    job = _check(job.located(path), data, problems)
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
