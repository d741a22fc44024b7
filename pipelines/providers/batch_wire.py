"""Reading a finished Batch API answer: which response answers which request, never by
position.

Cloudflare documents the finished poll answer as ``{"responses": [{"id", "result",
"success", "external_reference"}], "usage": {...}}`` and says responses "can come back out
of order": ``id`` is the request's index in the submitted ``requests``. The docs show
``external_reference`` in two places: on a request item (echoed on its response) and on the
``contexts`` of a bge-m3 query, where the response's reference is then ``null``; and one
guide shows each ``result`` wrapped in another ``{"result": ...}``. So a response is matched
by its ``external_reference`` when that names one of ours, else by its ``id``; a result
wrapped once more is unwrapped; an item that failed carries Cloudflare's error, read into the
same typed errors as a synchronous answer (by its code, never its message).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.catalog.metering import Usage
from pipelines.core.errors import ProviderError
from pipelines.providers.refusals import error_from_response
from pipelines.providers.wire import transport_error

# The keys of an envelope: a result inside one is unwrapped (see the module docstring).
_ENVELOPE = frozenset({"result", "success", "errors", "messages"})


@dataclass(frozen=True)
class ItemAnswer:
    """One request's outcome in a finished batch: its result, or the error it got."""

    result: Any = None
    error: ProviderError | None = None


@dataclass(frozen=True)
class BatchAnswer:
    """A finished batch: outcomes by request index, what it used, what matched nothing."""

    items: dict[int, ItemAnswer]
    usage: Usage | None  # None: the answer carried no usable usage
    unmatched: int  # responses that named no request of ours, or one answered already


def read_answer(answer: Mapping[str, Any], refs: Sequence[str], model: str) -> BatchAnswer:
    """Match ``answer``'s responses to the requests whose external references are ``refs``
    (``refs[i]`` for request ``i``)."""
    index_of = {ref: i for i, ref in enumerate(refs)}
    items: dict[int, ItemAnswer] = {}
    unmatched = 0
    responses = answer.get("responses")
    for entry in responses if isinstance(responses, list) else []:
        index = _index(entry, index_of, len(refs))
        if index is None or index in items:
            unmatched += 1
            continue
        items[index] = _item(entry, model)
    return BatchAnswer(items, _usage(answer.get("usage")), unmatched)


def _index(entry: Any, index_of: Mapping[str, int], size: int) -> int | None:
    if not isinstance(entry, dict):
        return None
    ref = entry.get("external_reference")
    if ref is not None:
        # ours, or another request's: a reference that is not ours is never read by its id
        return index_of.get(ref) if isinstance(ref, str) else None
    raw = entry.get("id")
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw < size:
        return None
    return raw


def _item(entry: dict[str, Any], model: str) -> ItemAnswer:
    result = entry.get("result")
    success = entry.get("success", True)
    # a result wrapped in another envelope (one of Cloudflare's guides shows it so)
    while isinstance(result, dict) and "result" in result and set(result) <= _ENVELOPE:
        success = success is not False and result.get("success", True) is not False
        errors = result.get("errors") or entry.get("errors")
        entry = {**entry, "errors": errors}
        result = result["result"]
    if success is False or entry.get("errors"):
        return ItemAnswer(error=_error(entry, model))
    if result is None:
        error = transport_error("the Batch API answered an item without a result", model=model)
        return ItemAnswer(error=error)
    return ItemAnswer(result=result)


def _error(entry: dict[str, Any], model: str) -> ProviderError:
    """The typed error of a failed item: its code decides, as for a synchronous answer (an
    item has no HTTP status of its own; its batch came back with a 200)."""
    errors = entry.get("errors")
    body = json.dumps(
        {"result": None, "success": False, "errors": errors if isinstance(errors, list) else []}
    ).encode()
    return error_from_response(200, {}, body, model=model)


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt, completion = _count(raw.get("prompt_tokens")), _count(raw.get("completion_tokens", 0))
    if prompt is None or completion is None:
        return None
    return Usage(input_tokens=prompt, output_tokens=completion)


def _count(value: Any) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return int(value) if ok else None
