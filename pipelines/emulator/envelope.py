"""Cloudflare's v4 response envelope, the error codes the emulator answers with, and fast JSON.

Bodies are serialised with orjson, which writes numpy arrays directly: a 100 x 1024 float32
embedding batch never becomes a Python list of floats.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import orjson
from starlette.responses import Response

_OPTS = orjson.OPT_SERIALIZE_NUMPY


class ApiError(Exception):
    """An answer in Cloudflare's error envelope; raised anywhere in a request, sent by the app."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def dumps(obj: Any) -> bytes:
    """JSON bytes for ``obj`` (numpy arrays included)."""
    return orjson.dumps(obj, option=_OPTS)


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises ``orjson.JSONDecodeError`` (a ``ValueError``)."""
    return orjson.loads(data)


def json_response(
    obj: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON response without Starlette's slower stdlib encoder."""
    return Response(dumps(obj), status_code=status, headers=headers, media_type="application/json")


def success(result: Any) -> dict[str, Any]:
    """The success envelope around a model output."""
    return {"result": result, "success": True, "errors": [], "messages": []}


ErrorDetail = Literal["coded", "message", "empty"]
"""How an error is listed: ``{code, message}`` (documented), a message alone, or nothing."""


def failure(
    code: int, message: str, *, result: Any = None, detail: ErrorDetail = "coded"
) -> dict[str, Any]:
    """The error envelope. Real 400s carry ``"result": {}`` and some real errors carry no
    code (or no error at all), so ``result`` and ``detail`` can say so."""
    errors: list[dict[str, Any]] = []
    if detail == "coded":
        errors.append({"code": code, "message": message})
    elif detail == "message":
        errors.append({"message": message})
    return {"result": result, "success": False, "errors": errors, "messages": []}


def error_response(exc: ApiError) -> Response:
    """The HTTP response for an :class:`ApiError`."""
    return json_response(failure(exc.code, exc.message), exc.status, exc.headers)


# The error constructors below use Cloudflare's published (or observed) codes and wording;
# ../shared/workers-ai-facts.md §1.2 lists where each comes from.


def bad_input(detail: str) -> ApiError:
    """400 / 5006: the body does not match the model's input schema."""
    return ApiError(400, 5006, f"AiError: Bad input: {detail}")


def incomplete_request(detail: str = "") -> ApiError:
    """400 / 3003: no usable body."""
    suffix = f" ({detail})" if detail else ""
    return ApiError(400, 3003, f"Request is missing headers or body{suffix}")


def invalid_base64() -> ApiError:
    """400 / 5004."""
    return ApiError(400, 5004, "Invalid data type for base64 input")


def no_such_model(model: str) -> ApiError:
    """400 / 5007."""
    return ApiError(400, 5007, f"No such model {model} or task")


def auth_error() -> ApiError:
    """401 / 10000."""
    return ApiError(401, 10000, "Authentication error")


def too_large(limit: int) -> ApiError:
    """413 / 3006."""
    return ApiError(413, 3006, f"Request is too large (limit {limit} bytes)")


def rate_limited(retry_after: int) -> ApiError:
    """429 / 3021, with the seconds until a slot in the per-minute window frees."""
    return ApiError(
        429,
        3021,
        "rate limiting: inference request per min rate reached",
        headers={"Retry-After": str(retry_after)},
    )


def capacity_exceeded() -> ApiError:
    """429 / 3040."""
    return ApiError(429, 3040, "Capacity temporarily exceeded, please try again.")


def daily_exhausted(code: int, daily_neurons: float) -> ApiError:
    """429 / 3036 or 4006: the day's free allocation is used up."""
    amount = f"{daily_neurons:,.0f}" if float(daily_neurons).is_integer() else f"{daily_neurons:,}"
    if code == 4006:
        message = (
            f"4006: you have used up your daily free allocation of {amount} neurons, "
            "please upgrade to Cloudflare's Workers Paid plan if you would like to "
            "continue usage."
        )
    else:
        message = (
            f"You have used up your daily free allocation of {amount} neurons. "
            "Please upgrade to Cloudflare's Workers Paid plan if you would like to "
            "continue usage."
        )
    return ApiError(429, code, message)


def paid_plan_required(model: str) -> ApiError:
    """403 / 5035: a model that needs Workers Paid, asked for on the free plan. The code and
    status are Cloudflare's documented ones; the wording is ours."""
    return ApiError(
        403, 5035, f"{model} requires the Workers Paid plan (or prepaid AI Gateway credits)"
    )


JSON_MODE_CODE = 5024
"""UNVERIFIED: Cloudflare documents the message "JSON Mode couldn't be met" but neither a
code nor a status for it. 5024 is our pick from its 5xxx inference-error range; clients
must not rely on it (nor on the status: see :func:`json_mode_failed`)."""


def json_mode_failed(status: int) -> ApiError:
    """The model could not produce JSON that meets the requested schema. ``status`` is 400,
    or 200 for the ``success: false`` envelope some clients report seeing (both UNVERIFIED)."""
    return ApiError(status, JSON_MODE_CODE, "JSON Mode couldn't be met")


_SERVER_ERRORS = {
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service temporarily unavailable",
}


def server_error(status: int) -> ApiError:
    """An injected 5xx. Cloudflare documents no codes for these; the code echoes the status."""
    return ApiError(status, status, _SERVER_ERRORS.get(status, "Server error"))
