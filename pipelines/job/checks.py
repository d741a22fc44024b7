"""The job rules that need the model catalog or several fields at once.

They run after pydantic has checked the shape (:mod:`pipelines.job.spec`), also when it
found problems, and add every problem they find to a :class:`~pipelines.job.problems.Problems`,
so a user fixes a file in one pass. A rule skips when a field it reads is unknown (missing or
invalid, see :mod:`pipelines.job.shape`), and the rules that need the model skip when the
model is unknown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.catalog.languages import describe_languages, normalize_language
from pipelines.catalog.models import (
    ModelInfo,
    has_model,
    list_models,
    schema_properties,
)
from pipelines.core.urls import url_problem
from pipelines.job.columns import check_columns
from pipelines.job.generate import (
    check_generate_fields,
    check_max_tokens,
    check_schema_fits,
    load_output_schema,
)
from pipelines.job.image import check_image_fields, check_image_model
from pipelines.job.models import check_budget_unit, external_problem, job_model
from pipelines.job.modes import batch_problem
from pipelines.job.paths import check_images_folder, check_output_paths
from pipelines.job.problems import Loc, Problems, closest, did_you_mean
from pipelines.job.spec import Job

TOKEN_MESSAGE = (
    "the API token comes from CLOUDFLARE_API_TOKEN or CLOUDFLARE_API_TOKEN_FILE (the key of "
    "provider openai from OPENAI_API_KEY or OPENAI_API_KEY_FILE), never from the job file"
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
        "openai_api_key",
        "openai_key",
        "authorization",
        "auth_token",
        "access_token",
        "bearer_token",
    }
)

# Work files are named after the output: ".<name>.pipelines", ".<name>.tmp-<pid>", ...
MAX_OUTPUT_NAME = 255 - 32


def is_token_key(key: object) -> bool:
    """Whether a mapping key looks like a place for a credential."""
    return isinstance(key, str) and key.strip().lower().replace("-", "_") in _TOKEN_KEYS


_RUNNER_FILLED = {
    "text": "the task.input column",
    "audio": "the audio files",
    "contexts": "the rows",
    "query": "the rows",
    "queries": "the rows",
    "documents": "the rows",
    "requests": "the rows (batching is automatic)",
    "prompt": "task.prompt",
    "negative_prompt": "task.negative_prompt",
    "messages": "task.messages (or task.prompt and task.system)",
    "response_format": "task.output_schema",
    "guided_json": "task.output_schema",
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


def _check_value(spec: dict[str, Any], value: Any) -> str | None:
    if "enum" in spec and value not in spec["enum"]:
        hint = did_you_mean(value, [str(v) for v in spec["enum"]])
        got = f"got {value!r}" + (f"; {hint}" if hint else "")
        return f"must be one of {', '.join(map(repr, spec['enum']))} ({got})"
    wanted = _JSON_TYPES.get(str(spec.get("type")))
    if wanted and (
        not isinstance(value, wanted) or (isinstance(value, bool) and bool not in wanted)
    ):
        return f"must be a {spec['type']}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        low, high = spec.get("minimum"), spec.get("maximum")
        if isinstance(low, int | float) and value < low:
            return f"must be at least {low:g} (got {value:g})"
        if isinstance(high, int | float) and value > high:
            return f"must be at most {high:g} (got {value:g})"
    return None


def _check_params(job: Job, model: ModelInfo, problems: Problems) -> dict[str, Any]:
    """Check params against the model's schema; returns them with languages normalised."""
    props = schema_properties(model.input_schema)
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
            hint = did_you_mean(key, allowed)
            accepts = f"{hint} {accepts}" if hint else accepts
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


def _check_paths(job: Job, problems: Problems) -> None:
    check_output_paths(job, problems)  # every path the job writes, against its inputs
    check_images_folder(job, problems)
    if len(set(job.output.keep)) != len(job.output.keep):
        problems.add(("output", "keep"), "lists a column twice")
    _check_vectorize(job, problems)


def _check_vectorize(job: Job, problems: Problems) -> None:
    """The sink reads the id and the metadata from the output, so they must be kept there."""
    spec = job.output.vectorize
    if spec is None:
        return
    where = ("output", "vectorize")
    if job.task.kind != "embed":
        problems.add(where, f"only embed jobs write vectors (this job is {job.task.kind})")
    if spec.id is not None and spec.id not in job.output.keep:
        problems.add((*where, "id"), f"{spec.id!r} must be a column of output.keep")
    missing = [c for c in spec.metadata if c not in job.output.keep]
    if missing:
        problems.add((*where, "metadata"), f"{missing} must be columns of output.keep")


def _unknown_model(model_id: str) -> str:
    """Why ``model_id`` is refused, with the closest catalog ids (by full id or by name)."""
    ids = [m.id for m in list_models()]
    by_name = {i.rsplit("/", 1)[-1]: i for i in ids}
    found = closest(model_id, ids, n=3) + [
        by_name[n] for n in closest(model_id.rsplit("/", 1)[-1], by_name, n=3)
    ]
    found = list(dict.fromkeys(found))[:3]
    names = [repr(f) for f in found]
    either = ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)
    hint = f"did you mean {either}? " if found else ""
    return f"unknown model {model_id!r} ({hint}see: pipelines models)"


def _resolve_model(job: Job, problems: Problems) -> ModelInfo | None:
    """The job's model (from the catalog, or outside it on provider openai), else ``None``
    with the problem said."""
    task = job.task
    if not problems.known(("task", "model")):
        return None
    external = external_problem(job, problems)  # None: not a model outside the catalog
    if external:
        problems.add(("task", "model"), external)
        return None
    if external is None:
        if not has_model(task.model):
            problems.add(("task", "model"), _unknown_model(task.model))
            return None
        return job_model(job)
    caps = [("budget", c) for c in ("daily_tokens", "daily_requests")]
    if not problems.known(("task", "kind"), *caps):
        return None
    if job.budget.external_cap() is None:
        problems.add(
            ("task", "model"),
            f"{task.model!r} is not a Workers AI model, so pipelines cannot price it in "
            "neurons: cap it with budget.daily_tokens (input + output tokens a day) or "
            "budget.daily_requests",
        )
        return None
    return job_model(job)


def _check_model(job: Job, problems: Problems) -> ModelInfo | None:
    """The job's model when it is known and fits the task kind (else ``None``)."""
    task = job.task
    model = _resolve_model(job, problems)
    if model is None:
        return None
    check_budget_unit(job, model, problems)
    if not problems.known(("task", "kind")):
        return None  # whether it fits cannot be told
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


def _at(job: Job, loc: tuple[str, str]) -> str:
    return str(getattr(getattr(job, loc[0]), loc[1]))


def _check_kinds(job: Job, raw_source: Any, problems: Problems) -> None:
    """What the task kind and the source kind require of each other and of other fields."""
    task, known = job.task, problems.known
    if known(("task", "kind"), ("task", "input")):
        if task.kind in _TEXT_KINDS and not task.input:
            problems.add(("task", "input"), f"required for {task.kind} jobs: the text column")
        if task.kind == "transcribe" and task.input is not None:
            problems.add(
                ("task", "input"), "not used by transcribe jobs (audio files are the input)"
            )
    if known(("task", "kind"), ("source", "kind")):
        if task.kind == "transcribe" and job.source.kind != "audio":
            problems.add(("source", "kind"), "transcribe jobs read audio: set source.kind: audio")
        if task.kind != "transcribe" and job.source.kind == "audio":
            problems.add(("source", "kind"), "audio sources only work with task.kind: transcribe")
    if not known(("source", "kind")) or not isinstance(raw_source, dict):
        return
    if job.source.kind == "audio" and job.source.key is not None:
        problems.add(
            ("source", "key"),
            "audio rows are keyed by their path relative to source.path; remove source.key",
        )
    for key, kind in (("delimiter", "csv"), ("encoding", "csv"), ("extensions", "audio")):
        if key in raw_source and job.source.kind != kind:
            problems.add(("source", key), f"only applies to {kind} sources")


def check_job(job: Job, data: dict[str, Any], problems: Problems) -> Job:
    """The rules that span fields or need the catalog; returns the job, normalised.

    ``job`` may be partial (see :mod:`pipelines.job.shape`): a rule reading a field that
    ``problems`` holds unknown skips."""
    task, known = job.task, problems.known
    model = _check_model(job, problems)
    _check_kinds(job, data.get("source"), problems)
    if known(("task", "kind")):
        for key in ("vtt", "srt"):
            if getattr(job.output, key) and task.kind != "transcribe":
                problems.add(("output", key), "only transcribe jobs write subtitles")
    caps = [("budget", c) for c in ("daily_neurons", "daily_tokens", "daily_requests")]
    if known(("budget", "reserve"), *caps):
        cap = job.budget.external_cap()
        field, value = ("daily_" + cap[0], cap[1]) if cap else ("daily_neurons", None)
        if job.budget.reserve >= (value or job.budget.daily_neurons):
            problems.add(("budget", "reserve"), f"must be below budget.{field}")
    if job.base_url is not None and (why := url_problem(job.base_url)) is not None:
        problems.add(("base_url",), why)
    params = _check_params(job, model, problems) if model else dict(task.params)
    schema: dict[str, Any] | None = None
    if known(("task", "kind")):
        check_generate_fields(job, problems)
        schema = load_output_schema(job, problems) if task.kind == "generate" else None
        check_schema_fits(job, model, schema, problems)
        check_max_tokens(model, params, problems)
        check_image_fields(job, problems)
        check_image_model(job, model, params, problems)
    languages = (("task", "source_lang_column"), ("task", "target_lang_column"))
    if known(("task", "kind"), ("task", "params"), *languages):
        _check_translate(job, params, problems)
    if known(("limits", "mode"), ("task", "kind"), ("provider",)) and job.limits.mode == "batch":
        if (why := batch_problem(task.kind, model, job.provider)) is not None:
            problems.add(("limits", "mode"), why)
    check_columns(job, problems)
    if not known(("source", "path"), ("output", "path")):
        return job
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
    update: dict[str, Any] = {}
    if params != task.params:
        update["params"] = params
    if schema is not None and schema != task.output_schema:
        update["output_schema"] = schema  # a path is read once, here
    if not update:
        return job
    fixed = job.model_copy(update={"task": task.model_copy(update=update)})
    return fixed.located(job.file or Path("."))
