"""Workers AI's wire format: request bodies per model, envelope unwrapping, error mapping.

Everything here is pure (bytes and dicts in, bytes, dicts or exceptions out) so it can be
tested without a network. :mod:`pipelines.providers.cloudflare` does the I/O.

The error mapping follows the facts in ``shared/workers-ai-facts.md`` §1.2: Cloudflare's
internal code decides first (it is the more specific signal), the HTTP status second.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from pipelines.catalog.models import ModelInfo
from pipelines.core.errors import (
    InvalidInput,
    TransientError,
    TransportError,
)
from pipelines.providers.refusals import (
    error_from_response,
    load_json,
    snippet,
)

JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"
# What an image model may answer: the image itself (SDXL, phoenix) or the JSON envelope.
IMAGE_ACCEPT = "image/png, image/jpeg, image/webp, application/json"
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF")

# Cloudflare's messages are shown to users; an HTML error page should not be.
_MAX_DETAIL_CHARS = 300

MISSING_CREDENTIALS = (
    "Cloudflare credentials are missing: set CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_API_TOKEN "
    "(or CLOUDFLARE_API_TOKEN_FILE, a file holding the token) in the environment"
)

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


def transport_error(
    detail: str, *, model: str | None = None, status: int | None = None
) -> TransientError:
    """A request that never got a well-formed answer."""
    return TransportError(
        f"no well-formed answer for {model or 'the request'}: {detail}; retrying with backoff",
        model=model,
        status=status,
    )


def image_body(headers: Mapping[str, str], body: bytes) -> bool:
    """Whether a 200's body is an image file rather than JSON: its content type says so, or
    its first bytes are an image's (the check of the image itself comes later, in the task)."""
    content_type = str(headers.get("content-type", "")).lower()
    return content_type.startswith("image/") or body.startswith(_IMAGE_MAGIC)


def unwrap_result(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    model: str | None = None,
    allow_bare: bool = False,
    image: bool = False,
) -> Any:
    """The ``result`` of a response envelope, or raise its typed error.

    ``allow_bare`` accepts a JSON object without the envelope (the Batch API's finished
    poll answer has been seen both ways). ``image`` (a text-to-image model) returns a body
    that is an image file as its bytes: the Stable Diffusion models and phoenix answer so,
    flux and lucid answer ``{image: <base64>}`` in the envelope, and either is taken from
    any image model, since which a model uses is only as sure as its published schema.
    """
    if status != 200:
        raise error_from_response(status, headers, body, model=model)
    if image and image_body(headers, body):
        return body
    data = load_json(body)
    if not isinstance(data, dict):
        what = "an empty body" if not body.strip() else f"a non-JSON body ({snippet(body)})"
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
        f"HTTP 200 without a result envelope ({snippet(body)})", model=model, status=status
    )
