"""HTTP routes of the emulator (a Starlette app) and the connection-dropping wrapper around it.

Routes: ``/client/v4/accounts/{account}/ai/run/{model}`` (sync and ``?queueRequest=true``;
image models that answer a PNG or JPEG body get it as the body, not in the envelope),
``/client/v4/accounts/{account}/ai/v1/embeddings`` and ``.../ai/v1/chat/completions``,
``/client/v4/accounts/{account}/vectorize/v2/indexes/...`` (Vectorize v2, see vectorize.py),
``/client/v4/graphql`` and the ``/__emulator/*`` control endpoints; any other path gets
Cloudflare's 404 / 7000.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from pipelines.emulator import envelope as env
from pipelines.emulator import graphql, vectorize
from pipelines.emulator.chat import native_body
from pipelines.emulator.clock import Clock
from pipelines.emulator.config import EmulatorConfig
from pipelines.emulator.faults import FaultPlan, truncate
from pipelines.emulator.images import BinaryBody
from pipelines.emulator.inputs import check_input, parse_json, raw_audio_input
from pipelines.emulator.service import Emulator

logger = logging.getLogger(__name__)
PREFIX = "/client/v4"
CONTROL = "/__emulator"
_DROP_KEY = "pipelines.emulator.drop"


class ConnectionDropped(Exception):
    """Raised to in-process clients (ASGI transports) when a drop cannot close a socket."""


class _DropResponse(Response):
    """Sends nothing; the wrapper then closes the connection."""

    def __init__(self) -> None:
        super().__init__(b"")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[_DROP_KEY][0] = True


class EmulatorApp(Starlette):
    """The Starlette app, able to drop a connection without answering."""

    emulator: Emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        flag = [False]
        scope[_DROP_KEY] = flag
        counted = not scope["path"].startswith(CONTROL)
        if counted:  # lets a test wait until requests its client gave up on are done
            self.emulator.in_flight += 1
        try:
            await super().__call__(scope, receive, send)
            if flag[0]:
                await self._drop(send)
        finally:
            if counted:
                self.emulator.in_flight -= 1

    @staticmethod
    async def _drop(send: Send) -> None:
        # uvicorn hands the app its per-request cycle's bound ``send``; its transport is the
        # socket. Closing it before any byte of a response is what a dropped connection
        # looks like to a client ("Server disconnected without sending a response").
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        if transport is None:
            raise ConnectionDropped("emulated connection drop")
        transport.close()
        for _ in range(3):  # let connection_lost run, so uvicorn sends no 500 of its own
            await asyncio.sleep(0)


async def _read_body(request: Request, limit: int) -> tuple[bytes, int]:
    """The body up to ``limit`` bytes, and the real size (drained, so the socket stays sane)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
    return b"".join(chunks), size


Handler = Callable[[bytes], Awaitable[tuple[Any, FaultPlan | None]]]


def _emulator(request: Request) -> Emulator:
    app: EmulatorApp = request.app
    return app.emulator


def _error_response(emu: Emulator, exc: env.ApiError) -> Response:
    """An inference error, in the envelope shape the knobs ask for."""
    return env.json_response(emu.error_body(exc), exc.status, exc.headers)


async def _faulted(emu: Emulator, *, queued: bool = False) -> FaultPlan:
    plan = emu.faults.plan(emu.config, emu.elapsed())
    if plan.delay_s > 0:
        await emu.clock.sleep(plan.delay_s)
    if plan.kind == "error":
        raise env.server_error(plan.status)
    if plan.kind == "capacity" and not queued:
        raise env.capacity_exceeded()
    return plan


async def _serve(request: Request, handler: Handler, *, enveloped: bool = True) -> Response:
    """Auth, size limit, error envelopes, counting and drop/malformed faults for a handler."""
    emu = _emulator(request)
    try:
        emu.authorize(request.headers.get("authorization"))
        body, size = await _read_body(request, emu.config.max_body_bytes)
        emu.check_size(size)
        result, plan = await handler(body)
    except env.ApiError as exc:
        emu.ledger.count(exc.status, exc.code)
        return _error_response(emu, exc)
    except Exception as exc:  # an emulator bug must still answer in the envelope
        logger.exception("emulator error")
        emu.ledger.count(500, 500)
        return _error_response(emu, env.ApiError(500, 500, f"Internal emulator error: {exc!r}"))
    if plan is not None and plan.kind == "drop":
        emu.ledger.count("dropped")
        return _DropResponse()
    emu.ledger.count(200)
    malformed = plan is not None and plan.kind == "malformed"
    if isinstance(result, BinaryBody):  # an image model that answers the file itself
        return Response(
            truncate(result.data) if malformed else result.data, media_type=result.media_type
        )
    payload = env.dumps(env.success(result) if enveloped else result)
    if malformed:
        payload = truncate(payload)
    return Response(payload, media_type="application/json")


async def run_model(request: Request) -> Response:
    """``POST /accounts/{account}/ai/run/{model}``: sync inference and the Batch API."""
    emu = _emulator(request)
    queue = request.query_params.get("queueRequest", "").lower() in ("true", "1", "yes")
    content_type = request.headers.get("content-type", "")

    async def handle(body: bytes) -> tuple[Any, FaultPlan | None]:
        model = emu.model(request.path_params["model"])
        if model.wire == "binary" and "json" not in content_type.lower():
            obj: Any = None
        else:
            obj = parse_json(body)
        if isinstance(obj, dict) and "request_id" in obj and len(obj) == 1:
            emu.settle_batches()
            return emu.batches.poll(model, obj["request_id"], emu.config, emu.run_item), None
        if queue and not model.batch_api:
            raise env.bad_input(
                f"Error: {model.id} does not support the asynchronous Batch API (queueRequest)"
            )
        emu.take_slot(model)
        # the Batch API queues work rather than refuse it for capacity (Cloudflare: requests
        # "are fulfilled eventually, rather than erroring out")
        plan = await _faulted(emu, queued=queue)
        if queue:
            emu.check_size(len(body), emu.config.batch_max_bytes)
            return emu.batches.submit(model, obj), plan
        inp = raw_audio_input(body) if obj is None else check_input(model, obj)
        outcome = emu.execute(model, inp, bill=plan.kind == "none")
        return outcome.result, plan

    return await _serve(request, handle)


async def openai_embeddings(request: Request) -> Response:
    """``POST /accounts/{account}/ai/v1/embeddings`` in OpenAI's shape."""
    emu = _emulator(request)

    async def handle(body: bytes) -> tuple[Any, FaultPlan | None]:
        obj = parse_json(body)
        if not isinstance(obj, dict) or "model" not in obj or "input" not in obj:
            raise env.bad_input("Error: required properties at '/' are 'model,input'")
        model = emu.model(obj["model"])
        if model.task != "embed":
            raise env.bad_input(f"Error: {model.id} is not a text-embedding model")
        emu.take_slot(model)
        plan = await _faulted(emu)
        inp = check_input(model, {"text": obj["input"]})
        outcome = emu.execute(model, inp, bill=plan.kind == "none")
        rows = outcome.result.get("data", outcome.result.get("response"))
        tokens = outcome.usage.input_tokens
        result = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)
            ],
            "model": model.id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return result, plan

    # OpenAI clients read the object itself, not Cloudflare's envelope around it.
    return await _serve(request, handle, enveloped=False)


async def openai_chat(request: Request) -> Response:
    """``POST /accounts/{account}/ai/v1/chat/completions`` in OpenAI's shape, for every
    text-generation model: the body is restated in the model's own form and validated
    against its published input schema, and the answer is always a ``chat.completion``."""
    emu = _emulator(request)

    async def handle(body: bytes) -> tuple[Any, FaultPlan | None]:
        obj = parse_json(body)
        if not isinstance(obj, dict) or "model" not in obj or "messages" not in obj:
            raise env.bad_input("Error: required properties at '/' are 'model,messages'")
        model = emu.model(obj["model"])
        if model.task != "generate":
            raise env.bad_input(f"Error: {model.id} is not a text-generation model")
        emu.take_slot(model)
        plan = await _faulted(emu)
        inp = check_input(model, native_body(model, obj))
        outcome = emu.execute(model, inp, bill=plan.kind == "none", openai=True)
        return outcome.result, plan

    # Like /v1/embeddings: the object itself on success, Cloudflare's envelope on errors.
    return await _serve(request, handle, enveloped=False)


async def graphql_usage(request: Request) -> Response:
    """``POST /client/v4/graphql``: neurons per model for the emulated day."""
    emu = _emulator(request)
    try:
        emu.authorize(request.headers.get("authorization"))
        obj = parse_json(await request.body())
    except env.ApiError as exc:
        return env.error_response(exc)
    if not isinstance(obj, dict) or not isinstance(obj.get("query"), str):
        return env.json_response({"data": None, "errors": [{"message": "no query"}]}, 400)
    emu.settle_batches()
    ledger = emu.ledger
    body = graphql.answer(
        obj["query"],
        obj.get("variables"),
        ledger.day(),
        ledger.by_day,
        emu.config.graphql_string_type,
    )
    return env.json_response(body)


async def no_route(request: Request) -> Response:
    """Any other path: Cloudflare's API answers 404 / 7000 in its envelope."""
    exc = env.ApiError(404, 7000, "No route for that URI")
    return _error_response(_emulator(request), exc)


async def stats(request: Request) -> Response:
    """``GET /__emulator/stats``."""
    return env.json_response(_emulator(request).stats())


async def reset(request: Request) -> Response:
    """``POST /__emulator/reset``."""
    emu = _emulator(request)
    emu.reset()
    return env.json_response({"ok": True, "day": emu.ledger.day()})


async def advance_day(request: Request) -> Response:
    """``POST /__emulator/advance-day``."""
    return env.json_response({"ok": True, "day": _emulator(request).advance_day()})


async def config_knobs(request: Request) -> Response:
    """``GET``/``POST /__emulator/config``: read or change knobs of a running emulator."""
    emu = _emulator(request)
    if request.method == "POST":
        try:
            changes = parse_json(await request.body())
            if not isinstance(changes, dict) or not set(changes) <= set(emu.config.as_dict()):
                raise ValueError(f"unknown knobs in {changes!r}")
            dataclasses.replace(emu.config, **changes)  # validates before touching the live one
        except (env.ApiError, TypeError, ValueError) as exc:
            return env.json_response(env.failure(400, str(exc)), 400)
        for name, value in changes.items():
            setattr(emu.config, name, value)
    return env.json_response(emu.config.as_dict())


def build_app(config: EmulatorConfig | None = None, *, clock: Clock | None = None) -> EmulatorApp:
    """The emulator as a Starlette (ASGI) app; ``app.emulator`` is its state.

    ``clock`` (default: real time) is what it reads and waits on for everything timed.
    """
    cfg = config if config is not None else EmulatorConfig()
    account = PREFIX + "/accounts/{account}/ai"
    routes = [
        Route(account + "/run/{model:path}", run_model, methods=["POST"]),
        Route(account + "/v1/embeddings", openai_embeddings, methods=["POST"]),
        Route(account + "/v1/chat/completions", openai_chat, methods=["POST"]),
        *vectorize.routes(PREFIX),
        Route(PREFIX + "/graphql", graphql_usage, methods=["POST"]),
        Route(CONTROL + "/stats", stats, methods=["GET"]),
        Route(CONTROL + "/reset", reset, methods=["POST"]),
        Route(CONTROL + "/advance-day", advance_day, methods=["POST"]),
        Route(CONTROL + "/config", config_knobs, methods=["GET", "POST"]),
        Route("/{path:path}", no_route, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]
    app = EmulatorApp(routes=routes)
    app.emulator = Emulator(cfg, clock)
    return app
