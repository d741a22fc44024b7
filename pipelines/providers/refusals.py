"""Cloudflare's error answers, read: the code and message out of any envelope shape (or none),
``Retry-After``, and one typed error for each refusal, chosen by a table of rules.

Codes decide first; the HTTP status decides when an error carries no code (real answers
sometimes carry none). The only rules that read text read Cloudflare's own words, never ours.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pipelines.core.errors import (
    AuthenticationFailed,
    CapacityExceeded,
    DailyNeuronsExhausted,
    InvalidInput,
    JsonModeUnmet,
    PaidPlanRequired,
    ProviderError,
    RateLimited,
    ServerError,
    TransientError,
    UnknownModel,
)

_MAX_DETAIL_CHARS = 300
_REJECTED = "{subject} rejected the input ({what}): fix or drop the rows in this request"

AUTH_HINT = (
    "check that CLOUDFLARE_API_TOKEN (or CLOUDFLARE_API_TOKEN_FILE) holds a valid API token "
    "with the Workers AI Read and Workers AI Edit permissions, and that "
    "CLOUDFLARE_ACCOUNT_ID is the account it belongs to"
)
_DAILY_CODES = frozenset({3036, 4006})
_DAILY_TEXT = "daily free allocation"
_INPUT_CODES = frozenset({5006, 5004, 3003})
# "JSON Mode couldn't be met": Cloudflare documents only these words (json-mode.mdx); 5024 is
# the emulator's pick of a code (unverified), so the documented words decide as well.
_JSON_MODE_CODES = frozenset({5024})
_JSON_MODE_TEXT = "json mode couldn't be met"
_CODE_PREFIX = re.compile(r"^\s*(\d{3,5})\s*:")


def load_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def snippet(body: bytes) -> str:
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
    data = load_json(body)
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
        messages.append(snippet(body))
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


def describe(status: int, code: int | None, message: str) -> str:
    """``HTTP 401, code 10000: message`` (the message cut short), for our messages."""
    parts = [f"HTTP {status}"]
    if code is not None:
        parts.append(f"code {code}")
    text = ", ".join(parts)
    if len(message) > _MAX_DETAIL_CHARS:
        message = message[:_MAX_DETAIL_CHARS] + "…"
    return f"{text}: {message}" if message else text


@dataclass(frozen=True)
class _Failure:
    """What a failed response said, for the rules below."""

    status: int
    code: int | None
    message: str  # Cloudflare's own words (lower-cased for the few text rules)
    what: str  # status, code and message, for our messages
    subject: str
    model: str | None
    retry_after: float | None


_Rule = tuple[Callable[[_Failure], bool], type[ProviderError], str]

# First match wins. Codes first; HTTP statuses decide when an error carries no code. The
# only text rules read Cloudflare's own words, for answers that come without a code.
_RULES: tuple[_Rule, ...] = (
    (
        lambda f: f.code in _JSON_MODE_CODES or _JSON_MODE_TEXT in f.message,
        JsonModeUnmet,
        "{subject} could not meet the output schema in JSON mode ({what}); asking again",
    ),
    (
        lambda f: f.code in _DAILY_CODES or _DAILY_TEXT in f.message,
        DailyNeuronsExhausted,
        "the account's daily free neuron allocation is used up ({what}); nothing more runs "
        "before 00:00 UTC: re-run the job after that (or use --wait) and it resumes where it "
        "stopped",
    ),
    (
        lambda f: f.code == 5035 or (f.status == 403 and "paid plan" in f.message),
        PaidPlanRequired,
        "{subject} requires the Workers Paid plan ({what}): upgrade the account or choose "
        "another model",
    ),
    (
        lambda f: f.code == 10000 or f.status in (401, 403),
        AuthenticationFailed,
        "Cloudflare refused the credentials ({what}): " + AUTH_HINT,
    ),
    (
        lambda f: f.code == 7003,
        AuthenticationFailed,
        "Cloudflare could not find the account ({what}): check CLOUDFLARE_ACCOUNT_ID",
    ),
    # any other 404 (e.g. 7000 "No route for that URI") means a wrong model or base URL:
    # failing every row as bad input would hide that
    (
        lambda f: f.code in (5007, 3042) or f.status == 404,
        UnknownModel,
        "no such model {subject} ({what}): check task.model against `pipelines models`, and "
        "that the base URL (if overridden) serves Workers AI",
    ),
    (
        lambda f: f.code == 3040,
        CapacityExceeded,
        "Workers AI is out of capacity for {subject} ({what}); retrying with backoff",
    ),
    (
        lambda f: f.code == 3021 or f.status == 429,
        RateLimited,
        "rate limited by Workers AI ({what}); retrying after a pause. If this keeps happening, "
        "lower limits.requests_per_minute",
    ),
    (
        lambda f: f.code == 3006 or f.status == 413,
        InvalidInput,
        "request too large for {subject} ({what}): lower limits.batch_size or send shorter "
        "texts or audio",
    ),
    (lambda f: f.code in _INPUT_CODES, InvalidInput, _REJECTED),
    (
        lambda f: f.code in (3007, 3008) or f.status == 408 or f.status >= 500,
        ServerError,
        "Workers AI failed on {subject} ({what}); retrying with backoff",
    ),
    (lambda f: 400 <= f.status < 500, InvalidInput, _REJECTED),
    # 2xx with success: false and no known code, 3xx, 1xx: nothing usable came back
    (
        lambda f: True,
        ServerError,
        "Workers AI answered {subject} without a result ({what}); retrying with backoff",
    ),
)


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
    failure = _Failure(
        status=status,
        code=code,
        message=message.lower(),
        what=describe(status, code, message),
        subject=model or "the request",
        model=model,
        retry_after=parse_retry_after(headers, now=now),
    )
    kind, template = next((k, text) for applies, k, text in _RULES if applies(failure))
    message = template.format(subject=failure.subject, what=failure.what)
    extra: dict[str, Any] = {}
    if issubclass(kind, TransientError):
        extra["retry_after"] = failure.retry_after
    return kind(message, status=status, code=code, model=model, **extra)
