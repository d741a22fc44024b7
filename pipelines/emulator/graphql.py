"""The GraphQL usage query (``aiInferenceAdaptiveGroups``, facts §6), answered by a real
GraphQL server (graphql-core) over a small slice of Cloudflare's analytics schema.

Being a real server means a query is validated like Cloudflare validates it: a syntax error,
an unknown field or type, or a variable declared with the wrong type gets ``{"data": null,
"errors": [{"message", "locations"}]}`` (HTTP 200), not an answer. Cloudflare's schema names
its string type ``string`` (its documented queries declare ``$accountTag: string!``);
``graphql_string_type`` can rename it to GraphQL's built-in ``String`` to emulate a server
that takes the other spelling, so a client's fallback between the two can be tested.

Groups are per requested dimension (``date``, ``modelId``); ``date``, ``date_geq``,
``date_leq``, ``date_gt`` and ``date_lt`` filter the days, no date filter selects the
emulated today; ``modelId``/``modelId_in``, ``orderBy`` and ``limit`` apply as named.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable
from functools import cache
from typing import Any

from graphql import (
    FieldNode,
    GraphQLResolveInfo,
    GraphQLScalarType,
    GraphQLSchema,
    InlineFragmentNode,
    SelectionSetNode,
    build_schema,
    graphql_sync,
)

_SDL = """
scalar Date
scalar float64
scalar uint64
{declare}

type Query {{ viewer: Viewer }}
type Viewer {{ accounts(filter: AccountFilter!): [Account!]! }}
input AccountFilter {{ accountTag: {s}, accountTag_in: [{s}!] }}
type Account {{
  aiInferenceAdaptiveGroups(
    limit: uint64, filter: AiInferenceAdaptiveGroupsFilter,
    orderBy: [AiInferenceAdaptiveGroupsOrderBy!]
  ): [AiInferenceAdaptiveGroups!]!
}}
input AiInferenceAdaptiveGroupsFilter {{
  date: Date, date_geq: Date, date_leq: Date, date_gt: Date, date_lt: Date,
  modelId: {s}, modelId_in: [{s}!]
}}
enum AiInferenceAdaptiveGroupsOrderBy {{
  date_ASC, date_DESC, modelId_ASC, modelId_DESC, sum_totalNeurons_ASC, sum_totalNeurons_DESC
}}
type AiInferenceAdaptiveGroups {{
  dimensions: AiInferenceAdaptiveGroupsDimensions!
  sum: AiInferenceAdaptiveGroupsSum!
}}
type AiInferenceAdaptiveGroupsDimensions {{ date: Date!, modelId: {s}! }}
type AiInferenceAdaptiveGroupsSum {{ totalNeurons: float64! }}
"""

STRING_TYPES = ("string", "String")


def _date(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"Date cannot represent a non-string value: {value!r}")
    return dt.date.fromisoformat(value).isoformat()  # ValueError for a malformed date


@cache
def schema(string_type: str = "string") -> GraphQLSchema:
    """The analytics schema, with its string type named ``string`` or ``String``."""
    declare = "scalar string" if string_type == "string" else ""
    built = build_schema(_SDL.format(declare=declare, s=string_type))
    date = built.type_map["Date"]
    assert isinstance(date, GraphQLScalarType)
    date.parse_value = _date  # type: ignore[method-assign]
    date.serialize = _date  # type: ignore[method-assign]
    return built


def _requested_dimensions(selections: SelectionSetNode | None) -> set[str]:
    """The fields asked for under ``dimensions`` (inline fragments included)."""
    found: set[str] = set()
    for node in selections.selections if selections else ():
        if isinstance(node, InlineFragmentNode):
            found |= _requested_dimensions(node.selection_set)
        elif isinstance(node, FieldNode) and node.name.value == "dimensions":
            found |= {
                sub.name.value
                for sub in (node.selection_set.selections if node.selection_set else ())
                if isinstance(sub, FieldNode)
            }
    return found


# ISO dates compare as strings.
_DATE_FILTERS: dict[str, Callable[[str, str], bool]] = {
    "date": operator.eq,
    "date_geq": operator.ge,
    "date_leq": operator.le,
    "date_gt": operator.gt,
    "date_lt": operator.lt,
}


def _day_selected(day: str, today: str, where: dict[str, Any]) -> bool:
    bounds = [(test, where[k]) for k, test in _DATE_FILTERS.items() if where.get(k) is not None]
    if not bounds:
        return day == today
    return all(test(day, bound) for test, bound in bounds)


def _model_selected(model_id: str, where: dict[str, Any]) -> bool:
    if "modelId" in where and model_id != where["modelId"]:
        return False
    return "modelId_in" not in where or model_id in where["modelId_in"]


class _Usage:
    """The root value: one account whose groups come from the emulator's books."""

    def __init__(self, today: str, by_day: dict[str, dict[str, float]]) -> None:
        self.today = today
        self.by_day = by_day
        self.viewer = {"accounts": self.accounts}

    def accounts(self, info: GraphQLResolveInfo, **_: Any) -> list[dict[str, Any]]:
        return [{"aiInferenceAdaptiveGroups": self.groups}]

    def groups(
        self,
        info: GraphQLResolveInfo,
        limit: int | None = None,
        filter: dict[str, Any] | None = None,  # the arguments' GraphQL names
        orderBy: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        where = filter or {}
        dims = _requested_dimensions(info.field_nodes[0].selection_set) & {"date", "modelId"}
        sums: dict[tuple[tuple[str, str], ...], float] = {}
        for day, book in self.by_day.items():
            if not _day_selected(day, self.today, where):
                continue
            for model_id, neurons in book.items():
                if _model_selected(model_id, where):
                    values = {"date": day, "modelId": model_id}
                    key = tuple(sorted((d, values[d]) for d in dims))
                    sums[key] = sums.get(key, 0.0) + neurons
        rows = [
            {"dimensions": dict(key), "sum": {"totalNeurons": total}}
            for key, total in sorted(sums.items())
        ]
        for order in reversed(orderBy or []):
            field, _, direction = order.rpartition("_")
            rows.sort(key=lambda r: _order_key(r, field), reverse=direction == "DESC")
        return rows if limit is None else rows[: int(limit)]


def _order_key(row: dict[str, Any], field: str) -> Any:
    if field == "sum_totalNeurons":
        return row["sum"]["totalNeurons"]
    return row["dimensions"].get(field, "")


def answer(
    query: str,
    variables: Any,
    today: str,
    by_day: dict[str, dict[str, float]],
    string_type: str = "string",
) -> dict[str, Any]:
    """The ``{"data": ..., "errors": ...}`` body (``errors`` is null when there are none)."""
    if variables is not None and not isinstance(variables, dict):
        return {"data": None, "errors": [{"message": "Variables must be provided as an Object"}]}
    result = graphql_sync(
        schema(string_type), query, root_value=_Usage(today, by_day), variable_values=variables
    )
    errors = [e.formatted for e in result.errors] if result.errors else None
    return {"data": result.data, "errors": errors}
