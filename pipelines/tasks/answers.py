"""Answers are checked before anything is stored: against the model's published output schema.

A 200 can still carry a wrong answer (a null translation, a vector of the wrong length, NaN
in it). Stored, it would be a wrong row for good and, cached, wrong for every later job that
sends the same text. So each family checks every answer with :class:`AnswerCheck` first, and
an answer that breaks the schema raises :class:`TransportError`: its rows fail as retryable.

The published schemas say less than the families rely on: embedding schemas are a ``oneOf``
whose async-response branch (no required field) matches any object, and nothing is
``required``. :func:`object_branch` picks the branch that declares the field a family reads
and requires that field. Validators are compiled once per model and schema. Vectors are
checked with numpy (shape, numeric, finite), not element by element: an answer is 100
vectors of up to 1,024 numbers.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import cache
from typing import Any, Literal

import numpy as np

# jsonschema ships no type information and its stubs are not a dependency
from jsonschema import Draft202012Validator  # type: ignore[import-untyped,unused-ignore]
from jsonschema.exceptions import best_match  # type: ignore[import-untyped,unused-ignore]

from pipelines.catalog.models import ModelInfo
from pipelines.core.errors import TransportError

_DETAIL_CHARS = 160


def bad_answer(model: ModelInfo, detail: str) -> TransportError:
    """The error for an answer outside the model's output schema (retried on the next run)."""
    if len(detail) > _DETAIL_CHARS:
        detail = detail[: _DETAIL_CHARS - 3] + "..."
    return TransportError(
        f"{model.id} answered outside its published output schema ({detail}); "
        "nothing was stored and the rows are sent again on the next run",
        model=model.id,
    )


def object_branch(schema: dict[str, Any], field: str) -> dict[str, Any] | None:
    """The object schema (of ``schema`` or one of its branches) declaring ``field``, with
    ``field`` required; ``None`` when no branch declares it."""
    outer = {k: v for k, v in schema.items() if k not in ("oneOf", "anyOf")}
    for branch in [schema, *schema.get("oneOf", []), *schema.get("anyOf", [])]:
        if isinstance(branch, dict) and field in (branch.get("properties") or {}):
            merged = {**outer, **branch, "type": "object"}
            merged.pop("oneOf", None)
            merged.pop("anyOf", None)
            merged["required"] = sorted({*merged.get("required", []), field})
            return copy.deepcopy(merged)
    return None


class AnswerCheck:
    """A compiled validator for the shape of answer a family reads."""

    def __init__(self, model: ModelInfo, schema: dict[str, Any]) -> None:
        Draft202012Validator.check_schema(schema)
        self.model = model
        self.schema = schema
        self._validator = Draft202012Validator(schema)

    def __call__(self, answer: Any) -> None:
        """Raise :func:`bad_answer` unless ``answer`` matches."""
        if self._validator.is_valid(answer):  # the fast path; errors only for bad answers
            return
        error = best_match(self._validator.iter_errors(answer))
        if error is None:  # pragma: no cover - is_valid said otherwise
            raise bad_answer(self.model, "invalid answer")
        where = "/" + "/".join(str(p) for p in error.absolute_path)
        raise bad_answer(self.model, f"{where}: {error.message}")


Shape = Literal["object", "vectors", "list"]


@cache
def check_for(model: ModelInfo, kind: Shape, fields: tuple[str, ...]) -> AnswerCheck:
    """The check of ``model``'s answers for one shape a family reads, compiled once.

    ``object``: the object branch declaring ``fields[0]``, requiring ``fields``. ``vectors``:
    the same, with the numbers of the vectors in ``fields[0]`` left to :func:`finite_matrix`.
    ``list``: a non-empty array of objects that all have ``fields``.
    """
    published = model.output_schema
    if kind == "list":
        items = dict(published.get("items") or {})
        items["required"] = sorted({*items.get("required", []), *fields})
        schema = {**published, "type": "array", "minItems": 1, "items": items}
        return AnswerCheck(model, copy.deepcopy(schema))
    branch = object_branch(published, fields[0])
    if branch is None:
        raise TypeError(f"{model.id}'s output schema declares no {fields[0]!r}")
    branch["required"] = sorted({*branch["required"], *fields})
    if kind == "vectors":
        branch["properties"][fields[0]] = {"type": "array", "items": {"type": "array"}}
    return AnswerCheck(model, branch)


def finite_matrix(model: ModelInfo, rows: Sequence[Any], count: int, dim: int) -> np.ndarray:
    """``rows`` as a ``count × dim`` float32 matrix of finite numbers, or :func:`bad_answer`."""
    try:
        matrix = np.array(rows)
    except ValueError:  # ragged: vectors of different lengths
        raise bad_answer(model, "the vectors have different lengths") from None
    # ints and floats only: None makes an object array, a string a unicode one
    if matrix.dtype.kind not in "iuf":
        raise bad_answer(model, f"the vectors hold non-numbers ({matrix.dtype.kind!r} values)")
    if matrix.shape != (count, dim):
        raise bad_answer(model, f"{matrix.shape} numbers where ({count}, {dim}) were expected")
    vectors = matrix.astype(np.float32)
    # after the cast: a number beyond float32's range is stored as Infinity
    if not np.isfinite(vectors).all():
        raise bad_answer(model, "the vectors hold NaN, Infinity or numbers beyond float32")
    return vectors
