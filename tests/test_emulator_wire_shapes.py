"""The client against the emulator's other real-world shapes, over loopback: error answers
with ``"result": {}`` or without a code (mapped by HTTP status), and a GraphQL server that
refuses one spelling of the usage query's string type."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest

from pipelines.catalog.models import get_model
from pipelines.core.errors import (
    AuthenticationFailed,
    InvalidInput,
    ProviderError,
    RateLimited,
    ServerError,
    UnknownModel,
)
from pipelines.emulator import FakeClock, RunningEmulator
from pipelines.providers import CloudflareProvider, ProviderSettings

T = TypeVar("T")
SMALL = get_model("@cf/baai/bge-small-en-v1.5")
TOKEN = "wire-shapes-token"

pytestmark = pytest.mark.emulator(token=TOKEN)


class Recording(httpx.AsyncHTTPTransport):
    """A real loopback transport that keeps every request and JSON answer it carried."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[Any] = []
        self.answers: list[Any] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(json.loads(request.content) if request.content else None)
        response = await super().handle_async_request(request)
        self.answers.append(json.loads(await response.aread()))
        return response


def call(
    emu: RunningEmulator,
    fn: Callable[[CloudflareProvider], Awaitable[T]],
    *,
    token: str = TOKEN,
    base_url: str | None = None,
) -> tuple[T | ProviderError, Recording]:
    """``fn``'s result (or the provider error it raised) and what went over the wire."""
    recording = Recording()
    settings = ProviderSettings(base_url=base_url or emu.base_url, account_id="acct", token=token)

    async def go() -> T | ProviderError:
        async with CloudflareProvider(settings, transport=recording) as provider:
            try:
                return await fn(provider)
            except ProviderError as exc:
                return exc

    return asyncio.run(go()), recording


# name: (knobs, how to call, the error expected)
FAILURES: dict[str, tuple[dict[str, Any], dict[str, Any], type[ProviderError], int]] = {
    "400 bad input": ({}, {"inputs": {"text": [""]}}, InvalidInput, 400),
    "401 wrong token": ({}, {"token": "not-the-token"}, AuthenticationFailed, 401),
    "404 no route": ({}, {"path": "/client/v3"}, UnknownModel, 404),
    "413 too large": (
        {"max_body_bytes": 100},
        {"inputs": {"text": ["x" * 200]}},
        InvalidInput,
        413,
    ),
    "429 per-minute limit": ({"rpm_scale": 1 / 3000}, {}, RateLimited, 429),
    "5xx server error": ({"error_rate": 1.0}, {}, ServerError, 500),
}


@pytest.mark.parametrize("case", list(FAILURES))
@pytest.mark.parametrize(
    ("result_shape", "codeless"), [("null", 0.0), ("object", 0.0), ("null", 1.0), ("object", 1.0)]
)
def test_every_error_shape_maps_to_its_typed_error(
    emu: RunningEmulator, fake_clock: FakeClock, case: str, result_shape: str, codeless: float
) -> None:
    knobs, how, expected, status = FAILURES[case]
    for name, value in {
        **knobs,
        "error_result_shape": result_shape,
        "codeless_error_rate": codeless,
    }.items():
        setattr(emu.config, name, value)
    if case.startswith("429"):  # the minute's one request: every next one is refused
        assert isinstance(call(emu, lambda p: p.run(SMALL, {"text": ["first"]}))[0], dict)
    inputs = how.get("inputs", {"text": ["hello"]})
    base_url = emu.url + how["path"] if "path" in how else None

    async def six_times(p: CloudflareProvider) -> list[ProviderError]:
        errors = []
        for _ in range(6):
            try:
                await p.run(SMALL, inputs)
            except ProviderError as exc:
                errors.append(exc)
        return errors

    errors, wire = call(emu, six_times, token=how.get("token", TOKEN), base_url=base_url)
    assert isinstance(errors, list) and len(errors) == 6
    for error in errors:
        assert type(error) is expected, error
        assert error.status is not None and error.status // 100 == status // 100
    for answer in wire.answers:
        assert answer["success"] is False
        assert answer["result"] == ({} if result_shape == "object" else None)
    listed = [len(a["errors"]) for a in wire.answers]
    if codeless:
        assert all(error.code is None for error in errors)
        assert set(listed) == {0, 1}  # both codeless shapes: a message alone, and none
    else:
        assert all(error.code is not None for error in errors) and set(listed) == {1}


def test_usage_query_declares_what_cloudflare_documents(emu: RunningEmulator) -> None:
    usage, wire = call(emu, lambda p: p.fetch_usage(emu.stats()["day"]))
    assert usage == {}
    (sent,) = wire.sent
    assert "$acct: string!" in sent["query"]


@pytest.mark.emulator(token=TOKEN, graphql_string_type="String")
def test_usage_query_falls_back_to_the_other_string_type_once(emu: RunningEmulator) -> None:
    call(emu, lambda p: p.run(SMALL, {"text": ["count me"]}))
    stats = emu.stats()

    async def twice(p: CloudflareProvider) -> list[dict[str, float]]:
        return [await p.fetch_usage(stats["day"]), await p.fetch_usage(stats["day"])]

    results, wire = call(emu, twice)
    assert isinstance(results, list)
    expected = {SMALL.id: pytest.approx(stats["models"][SMALL.id]["neurons"])}
    assert results == [expected, expected]
    declared = [sent["query"].split(",")[0] for sent in wire.sent]
    # refused, retried with the other spelling, which the provider then keeps using
    assert declared == ["query($acct: string!", "query($acct: String!", "query($acct: String!"]
    assert wire.answers[0]["data"] is None and wire.answers[0]["errors"]
