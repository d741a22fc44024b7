"""The GraphQL query that reads neuron usage from Cloudflare's analytics, and its answer.

Cloudflare's documented analytics queries declare the account variable as ``string!`` (its
schema's own string type); many working clients write GraphQL's built-in ``String!``.
:data:`STRING_TYPES` lists both, the documented one first: a server that refuses one
spelling with a validation error is asked once more with the other (see
:func:`refused_as_invalid`). Pure functions: :mod:`pipelines.providers.cloudflare` does the I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pipelines.core.errors import AuthenticationFailed, ServerError
from pipelines.providers.wire import transport_error

STRING_TYPES = ("string", "String")
"""The spellings of the account variable's type, in the order they are tried."""


def usage_query(string_type: str = STRING_TYPES[0]) -> str:
    """Neurons per model for one UTC day, with ``$acct`` declared as ``string_type!``."""
    return (
        f"query($acct: {string_type}!, $date: Date!) {{ viewer {{ "
        "accounts(filter: {accountTag: $acct}) "
        "{ aiInferenceAdaptiveGroups(limit: 1000, filter: {date: $date}) "
        "{ dimensions { modelId } sum { totalNeurons } } } } }"
    )


def load_answer(body: bytes) -> Mapping[str, Any]:
    """The JSON object of a GraphQL answer; a transport error for anything else."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise transport_error("the analytics API answered with a non-JSON body") from exc
    if not isinstance(data, Mapping):
        raise transport_error("the analytics API answered with an unexpected body")
    return data


def refused_as_invalid(data: Mapping[str, Any]) -> bool:
    """Whether the server refused the query itself rather than failed to run it.

    GraphQL reports a query that does not validate (a wrongly typed variable, say) with
    ``errors`` and no ``data``, and its errors point at the query text, never at a
    ``path`` of the result: the structure tells, not the wording.
    """
    errors = data.get("errors")
    if not errors or not isinstance(errors, list) or data.get("data") is not None:
        return False
    return all(isinstance(e, Mapping) and not e.get("path") for e in errors)


def usage_from_answer(data: Mapping[str, Any]) -> dict[str, float]:
    """Neurons per model id from a GraphQL answer, or the typed error it reports."""
    errors = data.get("errors")
    if errors:
        text = "; ".join(
            str(e.get("message", e)) if isinstance(e, Mapping) else str(e) for e in errors
        )[:300]
        if "not authorized" in text.lower() or "authentication" in text.lower():
            raise AuthenticationFailed(
                f"the analytics API refused the query ({text}): give the token the Account "
                "Analytics Read permission to read neuron usage"
            )
        raise ServerError(f"the analytics API failed ({text}); retrying with backoff")
    try:
        accounts = data["data"]["viewer"]["accounts"]
        groups = accounts[0]["aiInferenceAdaptiveGroups"] if accounts else []
        usage: dict[str, float] = {}
        for group in groups:
            model_id = str(group["dimensions"]["modelId"])
            usage[model_id] = usage.get(model_id, 0.0) + float(group["sum"]["totalNeurons"] or 0)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise transport_error("the analytics API answered in an unexpected shape") from exc
    return usage
