"""A loose answer to the GraphQL usage query (``aiInferenceAdaptiveGroups``, facts §6).

No GraphQL parser: dates are taken from the variables (any ``YYYY-MM-DD`` value) or from
literals in the query text. One date selects that day; two or more select the range between
the earliest and the latest (``date_geq``/``date_leq``); none selects the emulated today.
"""

from __future__ import annotations

import re
from typing import Any

_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_DIMENSIONS = re.compile(r"dimensions\s*\{([^}]*)\}")


def _dates(query: str, variables: dict[str, Any]) -> list[str]:
    found = [v for v in variables.values() if isinstance(v, str) and _DATE.fullmatch(v)]
    found += _DATE.findall(query)
    return sorted(set(found))


def answer(query: str, variables: Any, today: str, by_day: dict[str, dict[str, float]]) -> Any:
    """The ``{"data": ..., "errors": null}`` body for the emulated usage."""
    if "aiInferenceAdaptiveGroups" not in query:
        return {
            "data": None,
            "errors": [{"message": "the emulator only answers aiInferenceAdaptiveGroups"}],
        }
    dates = _dates(query, variables if isinstance(variables, dict) else {})
    lo, hi = (dates[0], dates[-1]) if dates else (today, today)
    dims = _DIMENSIONS.search(query)
    with_date = bool(dims and re.search(r"\bdate\b", dims.group(1)))
    groups = []
    for day in sorted(by_day):
        if not lo <= day <= hi:
            continue
        for model_id, neurons in sorted(by_day[day].items()):
            dimensions: dict[str, Any] = {"modelId": model_id}
            if with_date:
                dimensions["date"] = day
            groups.append({"dimensions": dimensions, "sum": {"totalNeurons": neurons}})
    if not with_date:
        merged: dict[str, float] = {}
        for g in groups:
            key = g["dimensions"]["modelId"]
            merged[key] = merged.get(key, 0.0) + g["sum"]["totalNeurons"]
        groups = [
            {"dimensions": {"modelId": m}, "sum": {"totalNeurons": n}} for m, n in merged.items()
        ]
    account = {"aiInferenceAdaptiveGroups": groups}
    return {"data": {"viewer": {"accounts": [account]}}, "errors": None}
