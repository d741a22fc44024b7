"""The OpenAI wire format, translated to and from what the task families speak (Workers AI's).

Pure, like :mod:`pipelines.providers.wire`: dicts and bytes in, dicts or typed errors out;
:mod:`pipelines.providers.openai` does the I/O.

- Requests: an embed call's ``{"text": [...], ...}`` becomes ``POST /embeddings`` with
  ``{model, input, encoding_format: "float", ...}``; a generate call's body goes to
  ``POST /chat/completions`` with ``model`` added and its JSON mode in OpenAI's form
  (``response_format: {type: json_schema, json_schema: {name, schema, strict}}``) whatever
  the model's native form (``guided_json``, Cloudflare's classic ``response_format``).
- Answers: embeddings come back as Workers AI's ``{shape, data}``, the vectors ordered by
  their ``index`` (never by position), with the ``usage`` the server reported; a
  ``chat.completion`` stays one for a model that answers in that shape (``request_form``
  ``chat``, and every model outside the catalog), and becomes ``{response, usage,
  finish_reason}`` for a model the families read in Cloudflare's classic shape.
- Errors: ``{"error": {message, type, code}}`` (or Cloudflare's envelope, from Workers AI
  behind the endpoint) become the typed errors Cloudflare's do; a few are worded for an
  OpenAI-compatible server, and OpenAI's ``insufficient_quota`` stops the run.
"""

from __future__ import annotations

import base64
import os
import re
import struct
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from pipelines.catalog.chat import openai_response_format
from pipelines.catalog.models import ModelInfo
from pipelines.core.errors import (
    AuthenticationFailed,
    InvalidInput,
    PaidPlanRequired,
    ProviderError,
    UnknownModel,
)
from pipelines.providers.refusals import (
    describe,
    error_details,
    error_from_response,
    load_json,
    snippet,
)
from pipelines.providers.wire import transport_error

EMBEDDINGS = "/embeddings"
CHAT = "/chat/completions"
EXTERNAL = "openai"  # the account and label prefix of a model outside the catalog
_USAGE_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")
_CF_ACCOUNT = re.compile(r"/accounts/([^/]+)/")
_GATEWAY_HOST = "gateway.ai.cloudflare.com"

# -- who: accounts and labels --------------------------------------------------------------


def server_of(base_url: str) -> str:
    """``host[:port]`` of ``base_url``, lower-cased (it names an account and a label)."""
    return urlsplit(base_url).netloc.lower()


def external_account(base_url: str) -> str:
    """The ledger account of a model outside the catalog: its units (tokens or requests)
    never mix with Cloudflare's neurons, nor with another server's."""
    return f"{EXTERNAL}@{server_of(base_url)}"


def external_label(base_url: str, model: ModelInfo) -> str:
    """Who produces the results of a model outside the catalog (``produced_by``)."""
    return f"{EXTERNAL}@{server_of(base_url)}:{model.id}"


def cloudflare_account(base_url: str, environ: Mapping[str, str] | None = None) -> str:
    """The Cloudflare account a Workers AI ``/ai/v1`` base URL bills: the one in its path
    (``/accounts/ID/ai/v1``, an AI Gateway's ``/v1/ID/GATEWAY/...``), else
    ``CLOUDFLARE_ACCOUNT_ID``, else ``default`` (as ``pipelines budget`` keys it)."""
    parts = urlsplit(base_url)
    found = _CF_ACCOUNT.search(parts.path + "/")
    if found:
        return found.group(1)
    segments = [s for s in parts.path.split("/") if s]
    if parts.hostname == _GATEWAY_HOST and len(segments) >= 2 and segments[0] == "v1":
        return segments[1]
    env = os.environ if environ is None else environ
    return env.get("CLOUDFLARE_ACCOUNT_ID") or "default"


# -- requests ------------------------------------------------------------------------------


def request_for(model: ModelInfo, inputs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The path (below the base URL) and JSON body of one call."""
    if model.task == "embed":
        return EMBEDDINGS, embeddings_body(model, inputs)
    if model.task == "generate":
        return CHAT, chat_body(model, inputs)
    raise UnknownModel(
        f"{model.id} is a {model.task} model: provider openai runs embedding and text-"
        "generation models only; use --provider cloudflare for it",
        model=model.id,
    )


def embeddings_body(model: ModelInfo, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``{"text": [...], **options}`` as an embeddings request."""
    rest = dict(inputs)
    texts = rest.pop("text", None)
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts:
        raise InvalidInput(f"{model.id}: an embeddings request needs texts", model=model.id)
    # floats, not base64: the vectors are read as numbers, like Workers AI's
    return {**rest, "model": model.id, "input": texts, "encoding_format": "float"}


def chat_body(model: ModelInfo, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """A generate call's body as a chat-completions request, its JSON mode in OpenAI's form."""
    body = dict(inputs)
    guided = body.pop("guided_json", None)
    if guided is not None:
        body["response_format"] = openai_response_format(guided)
    fmt = body.get("response_format")
    classic = model.json_mode == "response_format"  # {type, json_schema: SCHEMA}
    if classic and isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        body["response_format"] = openai_response_format(fmt.get("json_schema"))
    return {"model": model.id, **body}


# -- answers -------------------------------------------------------------------------------


def answer_of(
    status: int, headers: Mapping[str, str], body: bytes, *, model: str, server: str
) -> dict[str, Any]:
    """The JSON object of a successful answer, or raise its typed error."""
    if status != 200:
        raise openai_error(status, headers, body, model=model, server=server)
    data = load_json(body)
    if not isinstance(data, dict):
        what = "an empty body" if not body.strip() else f"a non-JSON body ({snippet(body)})"
        raise transport_error(f"HTTP 200 with {what}", model=model, status=status)
    if data.get("error"):  # some servers answer errors with a 200
        raise openai_error(status, headers, body, model=model, server=server)
    return data


def result_for(model: ModelInfo, data: dict[str, Any]) -> dict[str, Any]:
    """An answer in the shape the model's family reads (see the module docstring)."""
    if model.task == "embed":
        return embeddings_result(model, data)
    return chat_result(model, data)


def _vector(value: Any) -> Any:
    """An embedding as numbers: a base64 string (servers that ignore ``encoding_format``)
    is read as little-endian float32, as the OpenAI SDK reads it."""
    if not isinstance(value, str):
        return value
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        return value  # left for the family's check to refuse
    return list(struct.unpack(f"<{len(raw) // 4}f", raw[: len(raw) // 4 * 4]))


def embeddings_result(model: ModelInfo, data: dict[str, Any]) -> dict[str, Any]:
    """``{data: [{embedding, index}], usage}`` as ``{shape, data, usage}``, by index."""
    entries = data.get("data")
    if not isinstance(entries, list):
        raise transport_error("an embeddings answer without a data list", model=model.id)
    by_index: dict[int, Any] = {}
    for entry in entries:
        index = entry.get("index") if isinstance(entry, dict) else None
        if (
            not isinstance(index, int)
            or isinstance(index, bool)
            or not 0 <= index < len(entries)
            or index in by_index
        ):
            raise transport_error(
                f"an embeddings answer whose indexes are not 0..{len(entries) - 1} once each "
                f"(got {index!r})",
                model=model.id,
            )
        by_index[index] = _vector(entry.get("embedding"))
    vectors = [by_index[i] for i in range(len(entries))]
    width = len(vectors[0]) if vectors and isinstance(vectors[0], list) else 0
    out: dict[str, Any] = {"shape": [len(vectors), width], "data": vectors}
    usage = _usage(data.get("usage"))
    if usage:
        out["usage"] = usage
    return out


def chat_result(model: ModelInfo, data: dict[str, Any]) -> dict[str, Any]:
    """A ``chat.completion`` as the model's family reads it."""
    if model.request_form == "chat":
        return _without_nulls(data)  # the family reads (and checks) a chat.completion itself
    choices = data.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    if not isinstance(first, dict) or not isinstance(message, dict):
        raise transport_error(
            f"a chat answer without choices[0].message ({snippet(str(data).encode())})",
            model=model.id,
        )
    out: dict[str, Any] = {"response": message.get("content")}
    usage = _usage(data.get("usage"))
    if usage:
        out["usage"] = usage
    reason = first.get("finish_reason")
    if isinstance(reason, str):
        out["finish_reason"] = reason  # Cloudflare's shape has no place for it
    return out


def _without_nulls(data: dict[str, Any]) -> dict[str, Any]:
    """A ``chat.completion`` without the ``null`` fields of its choices and messages: OpenAI
    (and the SDK) write an absent ``tool_calls`` or ``refusal`` as ``null``, which Workers
    AI's published schemas, declaring them arrays and strings, would refuse."""
    choices = data.get("choices")
    if not isinstance(choices, list):
        return data
    cleaned = []
    for choice in choices:
        if isinstance(choice, dict):
            choice = {k: v for k, v in choice.items() if v is not None}
            message = choice.get("message")
            if isinstance(message, dict):
                choice["message"] = {k: v for k, v in message.items() if v is not None}
        cleaned.append(choice)
    return {**data, "choices": cleaned}


def _usage(value: Any) -> dict[str, Any]:
    """The token counts of a ``usage`` object (its nested details are not needed)."""
    if not isinstance(value, dict):
        return {}
    return {k: value[k] for k in _USAGE_COUNTS if isinstance(value.get(k), int | float)}


# -- errors --------------------------------------------------------------------------------


def _openai_kind(body: bytes) -> str | None:
    """The error object's ``code`` (else ``type``) when it is a word, e.g.
    ``insufficient_quota``: a structured field, never the message."""
    data = load_json(body)
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None
    for field in ("code", "type"):
        value = error.get(field)
        if isinstance(value, str) and value and not value.isdigit():
            return value
    return None


def openai_error(
    status: int, headers: Mapping[str, str], body: bytes, *, model: str | None, server: str
) -> ProviderError:
    """The typed error of a failed answer: Cloudflare's rules (codes, then statuses), with
    the refusals that name credentials or models worded for an OpenAI-compatible server."""
    typed = error_from_response(status, headers, body, model=model)
    kind = _openai_kind(body)
    code, message = error_details(body)
    what = describe(status, code, message)
    subject = model or "the model"
    if kind == "insufficient_quota":
        return PaidPlanRequired(
            f"{server} says the account has no quota or credits left ({what}): add credits "
            "or raise its limits, then run the job again",
            status=status,
            code=code,
            model=model,
        )
    if kind == "model_not_found" or isinstance(typed, UnknownModel):
        return UnknownModel(
            f"{server} has no model {subject} ({what}): check task.model, and that the base "
            "URL is the one /embeddings and /chat/completions hang off (usually ending in /v1)",
            status=status,
            code=code,
            model=model,
        )
    if isinstance(typed, AuthenticationFailed):
        return AuthenticationFailed(
            f"{server} refused the API key ({what}): check that OPENAI_API_KEY (or the file "
            "OPENAI_API_KEY_FILE names) holds a valid key for it",
            status=status,
            code=code,
            model=model,
        )
    return typed
