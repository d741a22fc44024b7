"""The rules of a generate job: templates, the output schema, max_tokens and JSON mode.

A generate job names its prompt either as ``prompt`` (with an optional ``system``) or as a
whole ``messages`` list; each text is a template (:mod:`pipelines.job.templates`). Its
``output_schema`` is inline or a ``.json`` file beside the job; it must be a valid JSON
Schema of an object, whose top-level properties become output columns, so their names may
not clash with the columns pipelines writes. Every problem is reported at its field.
"""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped,unused-ignore]
from jsonschema.exceptions import SchemaError  # type: ignore[import-untyped,unused-ignore]

from pipelines.catalog.models import ModelInfo, list_models
from pipelines.job.columns import added_columns
from pipelines.job.problems import Loc, Problems
from pipelines.job.spec import Job
from pipelines.job.templates import TemplateProblem, parse_template

# Columns every generate row gets, whatever its schema (see pipelines/tasks/generate.py).
USAGE_COLUMNS = ("prompt_tokens", "completion_tokens", "finish_reason", "truncated")
GENERATE_ONLY = ("prompt", "system", "messages", "output_schema")


def check_generate_fields(job: Job, problems: Problems) -> None:
    """Fields that only a generate job may set, and what a generate job must set."""
    task = job.task
    if task.kind != "generate":
        for name in GENERATE_ONLY:
            if name == "prompt" and task.kind == "image":
                continue  # an image job's prompt: pipelines.job.image checks it
            if getattr(task, name) is not None:
                kinds = "generate or image" if name == "prompt" else "generate"
                problems.add(("task", name), f"only applies to task.kind: {kinds}")
        return
    if task.input is not None:
        problems.add(
            ("task", "input"),
            "generate jobs read the columns their prompt names: use {{ column }} in "
            "task.prompt instead",
        )
    if task.truncate:
        problems.add(("task", "truncate"), "does not apply to generate jobs (prompts are not cut)")
    if (task.prompt is None) == (task.messages is None):
        problems.add(("task", "prompt"), "set either task.prompt or task.messages (one of them)")
    if task.messages is not None and task.system is not None:
        problems.add(("task", "system"), "with task.messages, put the system message in the list")
    if task.messages is not None and not any(m.role == "user" for m in task.messages):
        problems.add(("task", "messages"), "needs at least one message with role: user")
    _check_templates(job, problems)


def _check_templates(job: Job, problems: Problems) -> None:
    task = job.task
    located: list[tuple[Loc, str | None]] = [
        (("task", "prompt"), task.prompt),
        (("task", "system"), task.system),
        *(
            (("task", "messages", i, "content"), m.content)
            for i, m in enumerate(task.messages or [])
        ),
    ]
    for loc, source in located:
        if source is None:
            continue
        try:
            parse_template(source)
        except TemplateProblem as exc:
            problems.add(loc, str(exc))


def load_output_schema(job: Job, problems: Problems) -> dict[str, Any] | None:
    """The job's output schema as a checked object (read from its file if a path)."""
    given = job.task.output_schema
    loc: Loc = ("task", "output_schema")
    if given is None or not problems.known(loc):
        return None
    if isinstance(given, str):
        path = job.resolve(given)
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            problems.add(loc, f"cannot read {path}: {exc.strerror or exc}")
            return None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.add(loc, f"{path} is not JSON ({exc})")
            return None
    else:
        schema = given
    why = schema_problem(schema)
    if why is not None:
        problems.add(loc, why)
        return None
    return dict(schema)


def schema_problem(schema: Any) -> str | None:
    """Why ``schema`` cannot be an output schema, or None."""
    if not isinstance(schema, dict):
        return "must be a JSON Schema object (or the path of a .json file holding one)"
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "its top level"
        return f"is not a valid JSON Schema at {where}: {exc.message}"
    if schema.get("type") != "object" or not isinstance(schema.get("properties"), dict):
        return (
            "must describe an object (type: object, with properties): each top-level "
            "property becomes an output column"
        )
    if not schema["properties"]:
        return "lists no properties: name at least one (each becomes an output column)"
    return None


def check_schema_fits(
    job: Job, model: ModelInfo | None, schema: dict[str, Any] | None, problems: Problems
) -> None:
    """The model can take a schema, and no property clashes with another output column."""
    loc: Loc = ("task", "output_schema")
    if schema is None:
        return
    if model is not None and model.json_mode == "none":
        able = [m.id for m in list_models() if m.task == "generate" and m.json_mode != "none"]
        problems.add(
            loc,
            f"{model.id} has no JSON mode, so it cannot be held to an output schema; "
            f"models that have one: {', '.join(able)}",
        )
    taken = {**added_columns("generate"), **dict.fromkeys(job.output.keep, "a kept column")}
    taken.update(dict.fromkeys(USAGE_COLUMNS, "a generate result"))
    taken.pop("response", None)  # a schema's properties replace the response column
    for name in schema["properties"]:
        if name in taken:
            problems.add(
                loc,
                f"property {name!r} would be an output column, but that name is already "
                f"{taken[name]}; rename the property",
            )


def check_max_tokens(model: ModelInfo | None, params: dict[str, Any], problems: Problems) -> None:
    """``max_tokens`` (when given) fits the model's context window."""
    if model is None or model.task != "generate":
        return
    if params.get("stream"):
        problems.add(("task", "params", "stream"), "batch jobs do not stream; remove it")
    value = params.get("max_tokens")
    loc: Loc = ("task", "params", "max_tokens")
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        problems.add(loc, "must be a positive whole number of tokens")
    elif model.context_window is not None and value >= model.context_window:
        problems.add(
            loc,
            f"{value} leaves no room for the prompt in {model.id}'s context window of "
            f"{model.context_window} tokens",
        )
