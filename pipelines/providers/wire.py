"""Workers AI's wire format: request bodies per model, envelope unwrapping, error mapping.

Everything here is pure (bytes and dicts in, bytes, dicts or exceptions out) so it can be
tested without a network. :mod:`pipelines.providers.cloudflare` does the I/O.

The error mapping follows the facts in ``shared/workers-ai-facts.md`` §1.2: Cloudflare's
internal code decides first (it is the more specific signal), the HTTP status second.
"""

from __future__ import annotations

import base64
import email.utils
import json
import re
import time
from collections.abc import Mapping
from typing import Any

from pipelines.catalog.models import ModelInfo
from pipelines.core.errors import (
    AuthenticationFailed,
    CapacityExceeded,
    DailyNeuronsExhausted,
    InvalidInput,
    PaidPlanRequired,
    ProviderError,
    RateLimited,
    ServerError,
    TransientError,
    TransportError,
    UnknownModel,
)

JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"

# Cloudflare's messages are shown to users; an HTML error page should not be.
_MAX_DETAIL_CHARS = 300

AUTH_HINT = (
    "check that CLOUDFLARE_API_TOKEN (or CLOUDFLARE_API_TOKEN_FILE) holds a valid API token "
    "with the Workers AI Read and Workers AI Edit permissions, and that "
    "CLOUDFLARE_ACCOUNT_ID is the account it belongs to"
)
MISSING_CREDENTIALS = (
    "Cloudflare credentials are missing: set CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_API_TOKEN "
    "(or CLOUDFLARE_API_TOKEN_FILE, a file holding the token) in the environment"
)

_DAILY_CODES = frozenset({3036, 4006})
_DAILY_TEXT = "daily free allocation"
_INPUT_CODES = frozenset({5006, 5004, 3003})
_CODE_PREFIX = re.compile(r"^\s*(\d{3,5})\s*:")


# --------------------------------------------------------------------------- requests


def _audio_bytes(model: ModelInfo, inputs: Mapping[str, Any]) -> bytes:
    audio = inputs.get("audio")
    if isinstance(audio, bytes | bytearray | memoryview):
        data = bytes(audio)
        if data:
            return data
        raise InvalidInput(f"{model.id}: the audio is empty (0 bytes)", model=model.id)
    raise InvalidInput(
        f"{model.id}: the input needs the audio as bytes under 'audio'", model=model.id
    )


def json_inputs(model: ModelInfo, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object sent for ``inputs`` (also one item of a Batch API request).

    Only meaningful for ``json`` and ``base64`` models; ``binary`` models have no JSON form
    that we send.
    """
    if model.wire == "binary":
        raise InvalidInput(
            f"{model.id} takes the audio as the raw request body, not as JSON", model=model.id
        )
    out = dict(inputs)
    if model.wire == "base64":
        out["audio"] = base64.b64encode(_audio_bytes(model, inputs)).decode("ascii")
    return out


def encode_run_body(model: ModelInfo, inputs: Mapping[str, Any]) -> tuple[bytes, str]:
    """The body and content type of one ``/ai/run`` call for ``inputs``."""
    if model.wire == "binary":
        extra = sorted(k for k in inputs if k != "audio")
        if extra:
            # The raw-body form has nowhere to put options; dropping them silently would
            # give results the user did not ask for.
            raise InvalidInput(
                f"{model.id} takes only the audio (sent as the raw body); remove the "
                f"unsupported option(s) {', '.join(extra)} from task.params",
                model=model.id,
            )
        return _audio_bytes(model, inputs), BINARY_CONTENT_TYPE
    return encode_json(json_inputs(model, inputs), model=model.id), JSON_CONTENT_TYPE


def encode_json(obj: Any, *, model: str | None = None) -> bytes:
    """Compact UTF-8 JSON; NaN/Infinity are refused because the API would reject them."""
    try:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            f"the input for {model or 'the request'} cannot be sent as JSON ({exc})", model=model
        ) from exc
    return text.encode()


# --------------------------------------------------------------------------- responses


def _load_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _snippet(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    text = " ".join(text.split())
    if len(text) > _MAX_DETAIL_CHARS:
        text = text[:_MAX_DETAIL_CHARS] + "…"
    return text


def _as_code(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def error_details(body: bytes) -> tuple[int | None, str]:
    """Cloudflare's error code and message from an error body, whatever its shape.

    Handles the standard envelope (``errors: [{code, message}]``), the non-standard
    ``{"error": {"message": "4006: ...", "code": "internal_error"}}`` and plain text.
    """
    data = _load_json(body)
    code: int | None = None
    messages: list[str] = []
    if isinstance(data, dict):
        errors = data.get("errors")
        if isinstance(errors, list):
            for err in errors:
                if isinstance(err, dict):
                    if code is None:
                        code = _as_code(err.get("code"))
                    if err.get("message"):
                        messages.append(str(err["message"]))
                elif isinstance(err, str):
                    messages.append(err)
        err_obj = data.get("error")
        if isinstance(err_obj, dict):
            if code is None:
                code = _as_code(err_obj.get("code"))
            if err_obj.get("message"):
                messages.append(str(err_obj["message"]))
        elif isinstance(err_obj, str):
            messages.append(err_obj)
    elif body.strip():
        messages.append(_snippet(body))
    message = "; ".join(messages)
    if code is None:
        # "4006: you have used up..." carries the real code only in its text.
        match = _CODE_PREFIX.match(message)
        if match:
            code = int(match.group(1))
    return code, message


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP-date)."""
    lower = {k.lower(): v for k, v in headers.items()}
    raw_ms = lower.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = lower.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _describe(status: int, code: int | None, message: str) -> str:
    parts = [f"HTTP {status}"]
    if code is not None:
        parts.append(f"code {code}")
    text = ", ".join(parts)
    if len(message) > _MAX_DETAIL_CHARS:
        message = message[:_MAX_DETAIL_CHARS] + "…"
    return f"{text}: {message}" if message else text


def error_from_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    model: str | None = None,
    now: float | None = None,
) -> ProviderError:
    """The typed error for a failed response (any status, including a 200 with
    ``success: false``). Never raises; the caller raises what it returns."""
    code, message = error_details(body)
    what = _describe(status, code, message)
    subject = model or "the request"
    retry_after = parse_retry_after(headers, now=now)
    kw: dict[str, Any] = {"status": status, "code": code, "model": model}

    if code in _DAILY_CODES or _DAILY_TEXT in message.lower():
        return DailyNeuronsExhausted(
            f"the account's daily free neuron allocation is used up ({what}); nothing more "
            "runs before 00:00 UTC: re-run the job after that (or use --wait) and it resumes "
            "where it stopped",
            **kw,
        )
    if code == 5035 or (status == 403 and "paid plan" in message.lower()):
        return PaidPlanRequired(
            f"{subject} requires the Workers Paid plan ({what}): upgrade the account or "
            "choose another model",
            **kw,
        )
    if code == 10000 or status in (401, 403):
        return AuthenticationFailed(
            f"Cloudflare refused the credentials ({what}): {AUTH_HINT}", **kw
        )
    if code == 7003:
        return AuthenticationFailed(
            f"Cloudflare could not find the account ({what}): check CLOUDFLARE_ACCOUNT_ID",
            **kw,
        )
    # Any other 404 (e.g. 7000 "No route for that URI") means a wrong model or base URL:
    # failing every row as bad input would hide that.
    if code in (5007, 3042) or status == 404:
        return UnknownModel(
            f"no such model {subject} ({what}): check task.model against `pipelines models`, "
            "and that the base URL (if overridden) serves Workers AI",
            **kw,
        )
    if code == 3040:
        return CapacityExceeded(
            f"Workers AI is out of capacity for {subject} ({what}); retrying with backoff",
            retry_after=retry_after,
            **kw,
        )
    if code == 3021 or status == 429:
        return RateLimited(
            f"rate limited by Workers AI ({what}); retrying after a pause. If this keeps "
            "happening, lower limits.requests_per_minute",
            retry_after=retry_after,
            **kw,
        )
    if code == 3006 or status == 413:
        return InvalidInput(
            f"request too large for {subject} ({what}): lower limits.batch_size or send "
            "shorter texts or audio",
            **kw,
        )
    if code in _INPUT_CODES:
        return InvalidInput(
            f"{subject} rejected the input ({what}): fix or drop the rows in this request",
            **kw,
        )
    if code in (3007, 3008) or status == 408 or status >= 500:
        return ServerError(
            f"Workers AI failed on {subject} ({what}); retrying with backoff",
            retry_after=retry_after,
            **kw,
        )
    if 400 <= status < 500:
        return InvalidInput(
            f"{subject} rejected the input ({what}): fix or drop the rows in this request",
            **kw,
        )
    # 2xx with success: false and no known code, 3xx, 1xx: nothing usable came back.
    return ServerError(
        f"Workers AI answered {subject} without a result ({what}); retrying with backoff",
        retry_after=retry_after,
        **kw,
    )


def transport_error(
    detail: str, *, model: str | None = None, status: int | None = None
) -> TransientError:
    """A request that never got a well-formed answer."""
    return TransportError(
        f"no well-formed answer for {model or 'the request'}: {detail}; retrying with backoff",
        model=model,
        status=status,
    )


def unwrap_result(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    model: str | None = None,
    allow_bare: bool = False,
) -> Any:
    """The ``result`` of a response envelope, or raise its typed error.

    ``allow_bare`` accepts a JSON object without the envelope (the Batch API's finished
    poll answer has been seen both ways).
    """
    if status != 200:
        raise error_from_response(status, headers, body, model=model)
    data = _load_json(body)
    if not isinstance(data, dict):
        what = "an empty body" if not body.strip() else f"a non-JSON body ({_snippet(body)})"
        raise transport_error(f"HTTP 200 with {what}", model=model, status=status)
    if data.get("success") is False:
        raise error_from_response(status, headers, body, model=model)
    if "result" in data:
        if data["result"] is None:
            raise error_from_response(status, headers, body, model=model)
        return data["result"]
    if allow_bare and "errors" not in data:
        return data
    raise transport_error(
        f"HTTP 200 without a result envelope ({_snippet(body)})", model=model, status=status
    )
