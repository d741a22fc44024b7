"""The emulator's Batch API against the shapes Cloudflare publishes: both placements of
``external_reference`` (on a request, echoed; on a bge-m3 query's contexts, where the
response's is null), the knobs for the other shapes the docs show (reference null or left
out, a result wrapped once more, responses in order), items failing inside a batch, and a
queued payload never refused for capacity."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from pipelines.emulator import FakeClock, RunningEmulator

SMALL = "@cf/baai/bge-small-en-v1.5"
M3 = "@cf/baai/bge-m3"

pytestmark = pytest.mark.emulator(batch_delay_s=10, seed=3)


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    return body["result"]


def finished(client: httpx.Client, clock: FakeClock, model: str, requests: list[Any]) -> Any:
    queued = ok(client.post(f"/run/{model}?queueRequest=true", json={"requests": requests}))
    assert set(queued) == {"status", "request_id", "model"} and queued["status"] == "queued"
    clock.advance(10)
    # the REST docs poll with ?queueRequest=true, the binding without: both answer
    done = ok(client.post(f"/run/{model}", json={"request_id": queued["request_id"]}))
    assert set(done) == {"responses", "usage"}
    assert set(done["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    return done


def test_the_rest_docs_example_with_references_on_the_contexts(
    emu_client: httpx.Client, fake_clock: FakeClock
) -> None:
    request = {
        "query": "This is a story about Cloudflare",
        "contexts": [
            {"text": "This is a story about an orange cloud", "external_reference": "story1"},
            {"text": "This is a story about a llama", "external_reference": "story2"},
            {"text": "This is a story about a hugging emoji", "external_reference": "story3"},
        ],
    }
    (response,) = finished(emu_client, fake_clock, M3, [request])["responses"]
    assert set(response) == {"id", "result", "success", "external_reference"}
    assert response["id"] == 0 and response["success"] is True
    assert response["external_reference"] is None  # as the docs' answer shows
    assert sorted(r["id"] for r in response["result"]["response"]) == [0, 1, 2]


def requests_of(n: int) -> list[dict[str, Any]]:
    return [{"text": [f"text {i}"], "external_reference": f"ref-{i}"} for i in range(n)]


def test_references_echoed_and_responses_out_of_order(
    emu_client: httpx.Client, fake_clock: FakeClock
) -> None:
    responses = finished(emu_client, fake_clock, SMALL, requests_of(12))["responses"]
    assert [r["id"] for r in responses] != list(range(12))  # shuffled, as Cloudflare may
    assert all(r["external_reference"] == f"ref-{r['id']}" for r in responses)


@pytest.mark.parametrize("shape", ["null", "omit"])
def test_the_other_reference_shapes(
    emu: RunningEmulator, emu_client: httpx.Client, fake_clock: FakeClock, shape: str
) -> None:
    emu.config.batch_reference = shape
    for r in finished(emu_client, fake_clock, SMALL, requests_of(3))["responses"]:
        assert ("external_reference" in r) is (shape == "null")
        assert r.get("external_reference") is None


def test_nested_results_and_responses_in_order(
    emu: RunningEmulator, emu_client: httpx.Client, fake_clock: FakeClock
) -> None:
    emu.config.batch_nested_result = True
    emu.config.batch_shuffle = False
    responses = finished(emu_client, fake_clock, SMALL, requests_of(3))["responses"]
    assert [r["id"] for r in responses] == [0, 1, 2]
    assert all(set(r["result"]) == {"result"} for r in responses)
    assert responses[0]["result"]["result"]["shape"] == [1, 384]


def test_items_fail_inside_a_batch_and_are_not_billed(
    emu: RunningEmulator, emu_client: httpx.Client, fake_clock: FakeClock
) -> None:
    emu.config.batch_item_failure_rate = 0.5
    responses = finished(emu_client, fake_clock, SMALL, requests_of(40))["responses"]
    failed = [r for r in responses if not r["success"]]
    assert 5 < len(failed) < 35
    assert all(r["errors"][0]["code"] == 3007 and r["result"] is None for r in failed)
    assert emu.stats()["models"][SMALL]["items"] == 40 - len(failed)


@pytest.mark.emulator(batch_delay_s=10, capacity_burst_every_s=100, capacity_burst_len_s=50)
def test_a_queued_payload_is_never_refused_for_capacity(
    emu_client: httpx.Client, fake_clock: FakeClock
) -> None:
    sync = emu_client.post(f"/run/{SMALL}", json={"text": ["now"]})
    assert sync.status_code == 429 and sync.json()["errors"][0]["code"] == 3040
    done = finished(emu_client, fake_clock, SMALL, requests_of(2))
    assert all(r["success"] for r in done["responses"])
