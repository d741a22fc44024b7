"""Reading a finished Batch API answer (providers.batch_wire): responses matched to their
requests by external reference or id and never by position, results wrapped once more
unwrapped, item errors typed by their code, and the batch's usage."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.core.errors import (
    CapacityExceeded,
    DailyNeuronsExhausted,
    InvalidInput,
    Scope,
    ServerError,
    TransportError,
)
from pipelines.providers.batch_wire import read_answer

M = "@cf/baai/bge-small-en-v1.5"
REFS = ["b1:0", "b1:1", "b1:2"]


def ok(i: int, ref: Any = "absent", result: Any = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": i, "result": result or {"n": i}, "success": True}
    if ref != "absent":
        entry["external_reference"] = ref
    return entry


def test_matched_by_reference_whatever_the_order_and_the_ids_say() -> None:
    # the references win over ids and positions (here all three disagree)
    answer = {"responses": [ok(0, "b1:2", {"n": 2}), ok(2, "b1:0", {"n": 0}), ok(1, "b1:1")]}
    got = read_answer(answer, REFS, M)
    assert {i: a.result["n"] for i, a in got.items.items()} == {0: 0, 1: 1, 2: 2}
    assert got.unmatched == 0


@pytest.mark.parametrize("ref", [None, "absent"], ids=["null", "left-out"])
def test_without_a_reference_the_id_decides(ref: Any) -> None:
    answer = {"responses": [ok(2, ref), ok(0, ref), ok(1, ref)]}
    got = read_answer(answer, REFS, M)
    assert {i: a.result["n"] for i, a in got.items.items()} == {0: 0, 1: 1, 2: 2}


def test_what_names_no_request_of_ours_is_never_guessed() -> None:
    answer = {
        "responses": [
            ok(0, "other-batch:0"),  # somebody else's reference: not read by its id
            ok(1),
            ok(1),  # a second answer for the same request
            ok(7),  # no such request
            {"id": True, "result": {}, "success": True},
            "junk",
        ]
    }
    got = read_answer(answer, REFS, M)
    assert set(got.items) == {1} and got.unmatched == 5


def test_a_result_wrapped_in_another_result_is_unwrapped() -> None:
    answer = {"responses": [ok(0, None, {"result": {"response": "hi"}})]}
    (item,) = read_answer(answer, REFS, M).items.values()
    assert item.result == {"response": "hi"} and item.error is None
    plain = {"responses": [ok(0, None, {"response": "hi", "usage": {}})]}
    assert read_answer(plain, REFS, M).items[0].result == {"response": "hi", "usage": {}}


@pytest.mark.parametrize(
    ("errors", "kind", "scope"),
    [
        (
            [{"code": 3036, "message": "daily free allocation used up"}],
            DailyNeuronsExhausted,
            "DAY",
        ),
        ([{"code": 5006, "message": "Bad input"}], InvalidInput, "ROW"),
        (
            [{"code": 3040, "message": "Capacity temporarily exceeded"}],
            CapacityExceeded,
            "TRANSIENT",
        ),
        ([{"code": 3007, "message": "Inference timed out"}], ServerError, "TRANSIENT"),
        ([{"message": "something went wrong"}], ServerError, "TRANSIENT"),
        ([], ServerError, "TRANSIENT"),
    ],
)
def test_a_failed_item_carries_the_typed_error_of_its_code(
    errors: list[dict[str, Any]], kind: type, scope: str
) -> None:
    answer = {"responses": [{"id": 0, "result": None, "success": False, "errors": errors}]}
    error = read_answer(answer, REFS, M).items[0].error
    assert isinstance(error, kind) and error.scope is Scope[scope]


def test_a_success_without_a_result_is_a_transport_error() -> None:
    answer = {"responses": [{"id": 0, "result": None, "success": True}]}
    assert isinstance(read_answer(answer, REFS, M).items[0].error, TransportError)


def test_usage() -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    got = read_answer({"responses": [], "usage": usage}, REFS, M).usage
    assert got is not None and (got.input_tokens, got.output_tokens) == (12, 3)
    for bad in (None, {}, {"prompt_tokens": -1}, {"prompt_tokens": "12"}, {"prompt_tokens": True}):
        assert read_answer({"responses": [], "usage": bad}, REFS, M).usage is None
