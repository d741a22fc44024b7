"""A file's shape, checked with pydantic: every error becomes a located problem (with the
closest known key or value), and the model is still built from the parts that are valid.

That partial model is what lets the other rules run in the same pass: an invalid value is
dropped (its default applies), a missing required one gets a stand-in, and both are marked
unknown in :class:`~pipelines.job.problems.Problems`, so a rule that reads them skips instead
of judging the stand-in.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from pipelines.job.problems import Loc, Problems, did_you_mean

M = TypeVar("M", bound=BaseModel)
# Repair rounds: a missing section is filled with {} in one round, its fields in the next.
ROUNDS = 5


def validate_all(
    root: type[M],
    data: dict[str, Any],
    problems: Problems,
    *,
    skip: Callable[[Loc], bool] = lambda loc: False,
) -> M | None:
    """``data`` as a ``root``; each error is added to ``problems`` (unknown keys at a ``skip``
    location excepted: they are reported elsewhere). When there are errors, the model built
    from the valid parts, with the invalid ones unknown; ``None`` if even that fails."""
    try:
        return root.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
    for err in errors:
        loc = tuple(err["loc"])
        if not (err["type"] == "extra_forbidden" and skip(loc)):
            problems.add(loc, message(root, err))
    pruned = copy.deepcopy(data)
    for _ in range(ROUNDS):
        if not all(_repair(root, pruned, err, problems) for err in errors):
            return None
        try:
            return root.model_validate(pruned)
        except ValidationError as exc:
            errors = exc.errors()
    return None


def message(root: type[BaseModel], err: Any) -> str:
    """A pydantic error as a problem's message, with the closest known key or value."""
    kind, loc, msg = err["type"], tuple(err["loc"]), str(err["msg"])
    if kind == "extra_forbidden":
        owner = _model_at(root, loc[:-1])
        if owner is None:
            return "unknown key"
        known = list(owner.model_fields)
        hint = did_you_mean(loc[-1], known)
        return f"unknown key ({hint + ' ' if hint else ''}expected one of: {', '.join(known)})"
    if kind == "missing":
        return "required key is missing"
    if kind == "string_pattern_mismatch" and loc == ("name",):  # the job's name
        return "use letters, digits, '.', '_' and '-', starting with a letter or digit"
    text = msg[:1].lower() + msg[1:]
    value = err.get("input")
    if kind == "literal_error" and isinstance(value, str | int | float | bool):
        where, info = _field(root, loc)
        choices = get_args(info.annotation) if info is not None and where == loc else ()
        hint = did_you_mean(value, [str(c) for c in choices])
        text += f" (got {value!r}{'; ' + hint if hint else ''})"
    return text


def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The pydantic model that owns the mapping at ``loc`` (for "expected one of")."""
    model = root
    for part in loc:
        info = model.model_fields.get(str(part))
        sub = info.annotation if info else None
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            return None
        model = sub
    return model


def _field(root: type[BaseModel], loc: Loc) -> tuple[Loc, FieldInfo | None]:
    """The longest start of ``loc`` that names a model field, and that field."""
    model: type[BaseModel] | None = root
    path: list[str | int] = []
    info: FieldInfo | None = None
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            break
        info = model.model_fields[part]
        path.append(part)
        sub = info.annotation
        model = sub if isinstance(sub, type) and issubclass(sub, BaseModel) else None
    return tuple(path), info


def _container(data: Any, loc: Loc) -> dict[Any, Any] | None:
    for part in loc:
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data if isinstance(data, dict) else None


_NO_STAND_IN = object()


def _stand_in(info: FieldInfo) -> Any:
    """A valid value for a required field nobody gave (the rules never read it)."""
    ann = info.annotation
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return {}
    if get_origin(ann) is Literal:
        return get_args(ann)[0]
    return "x" if ann is str else _NO_STAND_IN


def _repair(root: type[BaseModel], data: dict[str, Any], err: Any, problems: Problems) -> bool:
    """Drop the value an error is about (or stand in for a missing one); False if it
    cannot be done."""
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":  # an unknown key: nothing reads it
        container = _container(data, loc[:-1])
        if container is not None:
            container.pop(loc[-1], None)
        return container is not None
    where, info = _field(root, loc)
    container = _container(data, where[:-1])
    if not where or info is None or container is None:
        return False
    problems.forget(where)
    if err["type"] != "missing" or where != loc:
        container.pop(where[-1], None)
        return True
    stand_in = _stand_in(info)
    container[where[-1]] = stand_in
    return stand_in is not _NO_STAND_IN
