"""Metering and the other endpoints: stats, OpenAI embeddings, the Batch API, GraphQL usage."""

from __future__ import annotations

import base64
import io
import time
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from pipelines.catalog.metering import Usage, neurons
from pipelines.catalog.models import get_model
from pipelines.catalog.tokens import model_tokens
from pipelines.emulator import FakeClock, RunningEmulator

AUTH = {"Authorization": "Bearer test-token"}
SMALL = "@cf/baai/bge-small-en-v1.5"

pytestmark = pytest.mark.emulator(batch_delay_s=30)


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()["result"]


def test_stats_bill_exactly_the_counted_tokens(
    emu: RunningEmulator, emu_client: httpx.Client
) -> None:
    texts = ["Neurons are billed per input token.", "Tokenization counts [CLS] and [SEP]."]
    ok(emu_client.post(f"/run/{SMALL}", json={"text": texts}))
    ok(emu_client.post(f"/run/{SMALL}", json={"text": texts[0]}))
    emu_client.post(f"/run/{SMALL}", json={"text": ""})  # refused: counted, not billed
    model = get_model(SMALL)
    tokens = sum(model_tokens(model, texts)) + model_tokens(model, texts[:1])[0]
    expected = neurons(model, Usage(input_tokens=tokens))
    stats = emu.stats()
    entry = stats["models"][SMALL]
    assert entry["requests"] == 2 and entry["items"] == 3
    assert entry["input_tokens"] == tokens and entry["output_tokens"] == 0
    assert entry["neurons"] == pytest.approx(expected) == entry["neurons_total"]
    assert stats["neurons_today"] == pytest.approx(expected)
    assert stats["requests_total"] == 3
    assert stats["status_counts"] == {"200": 2, "400": 1}
    assert stats["error_codes"] == {"5006": 1}
    assert stats["daily_neurons"] == 10_000
    assert stats["history"] == {stats["day"]: pytest.approx(expected)}
    time.strptime(stats["day"], "%Y-%m-%d")


def test_translation_bills_input_and_output_tokens(
    emu: RunningEmulator, emu_client: httpx.Client
) -> None:
    m2m = get_model("@cf/meta/m2m100-1.2b")
    text = "The weather is lovely today"
    out = ok(emu_client.post(f"/run/{m2m.id}", json={"text": text, "target_lang": "spanish"}))
    usage = Usage(model_tokens(m2m, [text])[0], model_tokens(m2m, [out["translated_text"]])[0])
    entry = emu.stats()["models"][m2m.id]
    assert (entry["input_tokens"], entry["output_tokens"]) == (
        usage.input_tokens,
        usage.output_tokens,
    )
    assert entry["neurons"] == pytest.approx(neurons(m2m, usage))


def test_audio_is_billed_by_decoded_duration(
    emu: RunningEmulator, emu_client: httpx.Client
) -> None:
    t = np.arange(int(4.0 * 8000)) / 8000
    buf = io.BytesIO()
    sf.write(buf, np.sin(2 * np.pi * 300 * t).astype("float32"), 8000, format="WAV")
    ok(
        emu_client.post(
            "/run/@cf/openai/whisper", content=buf.getvalue(), headers={"content-type": "audio/wav"}
        )
    )
    entry = emu.stats()["models"]["@cf/openai/whisper"]
    assert entry["audio_seconds"] == pytest.approx(4.0)
    assert entry["neurons"] == pytest.approx(41.14 * 4.0 / 60)


def test_openai_embeddings_endpoint(emu: RunningEmulator, emu_client: httpx.Client) -> None:
    body = {"model": SMALL, "input": ["first text", "second text"]}
    response = emu_client.post("/v1/embeddings", json=body)
    assert response.status_code == 200
    out = response.json()
    assert out["object"] == "list" and out["model"] == SMALL
    assert [d["index"] for d in out["data"]] == [0, 1]
    assert all(d["object"] == "embedding" and len(d["embedding"]) == 384 for d in out["data"])
    tokens = sum(model_tokens(get_model(SMALL), body["input"]))
    assert out["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    native = ok(emu_client.post(f"/run/{SMALL}", json={"text": body["input"]}))
    assert np.allclose(native["data"], [d["embedding"] for d in out["data"]])
    single = emu_client.post("/v1/embeddings", json={"model": SMALL, "input": "one"}).json()
    assert len(single["data"]) == 1
    assert emu.stats()["models"][SMALL]["requests"] == 3
    bad = emu_client.post("/v1/embeddings", json={"model": "@cf/meta/m2m100-1.2b", "input": "x"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["code"] == 5006
    unknown = emu_client.post("/v1/embeddings", json={"model": "@cf/x/y", "input": "x"})
    assert unknown.json()["errors"][0]["code"] == 5007


def _poll(client: httpx.Client, model: str, request_id: str) -> Any:
    return ok(client.post(f"/run/{model}?queueRequest=true", json={"request_id": request_id}))


def test_batch_api_round_trip(
    emu: RunningEmulator, emu_client: httpx.Client, fake_clock: FakeClock
) -> None:
    requests = [
        {"text": ["alpha", "beta"], "external_reference": "row-1"},
        {"text": ""},  # fails alone; the rest of the batch is served
        {"text": "gamma", "pooling": "cls", "external_reference": "row-3"},
    ]
    queued = ok(emu_client.post(f"/run/{SMALL}?queueRequest=true", json={"requests": requests}))
    assert queued["status"] == "queued" and queued["model"] == SMALL
    request_id = queued["request_id"]
    assert _poll(emu_client, SMALL, request_id)["status"] == "queued"
    fake_clock.advance(15)  # half the batch delay
    assert _poll(emu_client, SMALL, request_id)["status"] == "running"
    assert emu.stats()["models"] == {}  # nothing billed before completion
    fake_clock.advance(14.9)
    assert _poll(emu_client, SMALL, request_id)["status"] == "running"
    fake_clock.advance(0.1)
    done = _poll(emu_client, SMALL, request_id)
    by_id = {r["id"]: r for r in done["responses"]}
    assert by_id[0]["success"] is True and by_id[0]["external_reference"] == "row-1"
    assert by_id[0]["result"]["shape"] == [2, 384]
    assert by_id[1]["success"] is False and by_id[1]["errors"][0]["code"] == 5006
    assert by_id[2]["result"]["pooling"] == "cls" and by_id[2]["external_reference"] == "row-3"
    tokens = sum(model_tokens(get_model(SMALL), ["alpha", "beta", "gamma"]))
    assert done["usage"] == {
        "prompt_tokens": tokens,
        "completion_tokens": 0,
        "total_tokens": tokens,
    }
    entry = emu.stats()["models"][SMALL]
    assert (entry["requests"], entry["items"], entry["input_tokens"]) == (2, 3, tokens)
    assert _poll(emu_client, SMALL, request_id) == done  # polling again does not bill again
    assert emu.stats()["models"][SMALL]["requests"] == 2


def test_batch_api_translation_and_turbo(emu_client: httpx.Client, fake_clock: FakeClock) -> None:
    audio = io.BytesIO()
    sf.write(audio, np.zeros(8000, dtype="float32"), 8000, format="WAV")
    jobs = {
        "@cf/meta/m2m100-1.2b": [{"text": "hello", "target_lang": "fr"}],
        "@cf/openai/whisper-large-v3-turbo": [
            {"audio": base64.b64encode(audio.getvalue()).decode()}
        ],
    }
    ids = {
        model: ok(emu_client.post(f"/run/{model}?queueRequest=true", json={"requests": items}))[
            "request_id"
        ]
        for model, items in jobs.items()
    }
    fake_clock.advance(30)
    m2m = _poll(emu_client, "@cf/meta/m2m100-1.2b", ids["@cf/meta/m2m100-1.2b"])
    assert m2m["responses"][0]["result"]["translated_text"].startswith("[fr] ")
    assert m2m["usage"]["completion_tokens"] > 0
    turbo = _poll(
        emu_client, "@cf/openai/whisper-large-v3-turbo", ids["@cf/openai/whisper-large-v3-turbo"]
    )
    assert turbo["responses"][0]["result"]["transcription_info"]["duration"] == pytest.approx(1.0)
    unknown = emu_client.post(f"/run/{SMALL}?queueRequest=true", json={"request_id": "nope"})
    assert unknown.status_code == 400


USAGE_QUERY = """query Usage($acct: string!, $date: Date!) {
  viewer { accounts(filter: {accountTag: $acct}) {
    aiInferenceAdaptiveGroups(limit: 100, filter: {date: $date}) {
      dimensions { modelId } sum { totalNeurons } } } } }"""


def graphql(emu: RunningEmulator, query: str, variables: dict[str, Any] | None = None) -> Any:
    body = {"query": query, "variables": variables or {}}
    response = httpx.post(f"{emu.base_url}/graphql", json=body, headers=AUTH)
    assert response.status_code == 200, response.text  # GraphQL errors come as a 200
    return response.json()


def groups_of(answer: Any) -> list[dict[str, Any]]:
    assert answer["errors"] is None, answer
    groups: list[dict[str, Any]] = answer["data"]["viewer"]["accounts"][0][
        "aiInferenceAdaptiveGroups"
    ]
    return groups


def test_graphql_reports_neurons_per_model_for_the_day(
    emu: RunningEmulator, emu_client: httpx.Client
) -> None:
    ok(emu_client.post(f"/run/{SMALL}", json={"text": ["one", "two"]}))
    ok(emu_client.post("/run/@cf/huggingface/distilbert-sst-2-int8", json={"text": "great"}))
    stats = emu.stats()
    day = stats["day"]
    groups = groups_of(graphql(emu, USAGE_QUERY, {"acct": "acct", "date": day}))
    got = {g["dimensions"]["modelId"]: g["sum"]["totalNeurons"] for g in groups}
    assert got == {m: pytest.approx(e["neurons"]) for m, e in stats["models"].items()}
    # another day has nothing; the date can also be written in the query itself
    emu.advance_day()
    inline = USAGE_QUERY.replace(", $date: Date!", "").replace("$date", f'"{day}"')
    assert len(groups_of(graphql(emu, inline, {"acct": "a"}))) == 2
    assert groups_of(graphql(emu, USAGE_QUERY, {"acct": "a", "date": emu.stats()["day"]})) == []
    unauthorized = httpx.post(f"{emu.base_url}/graphql", json={"query": USAGE_QUERY})
    assert unauthorized.status_code == 401


def test_graphql_groups_by_the_requested_dimensions(
    emu: RunningEmulator, emu_client: httpx.Client
) -> None:
    bert = "@cf/huggingface/distilbert-sst-2-int8"
    ok(emu_client.post(f"/run/{SMALL}", json={"text": "day one"}))
    first = emu.stats()
    emu.advance_day()
    ok(emu_client.post(f"/run/{SMALL}", json={"text": "day two"}))
    ok(emu_client.post(f"/run/{bert}", json={"text": "day two"}))
    second = emu.stats()
    neurons = {
        (first["day"], SMALL): first["models"][SMALL]["neurons"],
        (second["day"], SMALL): second["models"][SMALL]["neurons"],
        (second["day"], bert): second["models"][bert]["neurons"],
    }
    span = f'date_geq: "{first["day"]}", date_leq: "{second["day"]}"'
    by_day = groups_of(
        graphql(
            emu,
            f"""{{ viewer {{ accounts(filter: {{accountTag: "a"}}) {{
              aiInferenceAdaptiveGroups(limit: 10, filter: {{{span}}}, orderBy: [date_ASC]) {{
                dimensions {{ date modelId }} sum {{ totalNeurons }} }} }} }} }}""",
        )
    )
    got = {(g["dimensions"]["date"], g["dimensions"]["modelId"]): g for g in by_day}
    assert {k: g["sum"]["totalNeurons"] for k, g in got.items()} == pytest.approx(neurons)
    assert [g["dimensions"]["date"] for g in by_day] == [first["day"]] + [second["day"]] * 2
    per_model = groups_of(
        graphql(
            emu,
            f"""{{ viewer {{ accounts(filter: {{accountTag: "a"}}) {{
              aiInferenceAdaptiveGroups(limit: 1, filter: {{{span}, modelId_in: ["{SMALL}"]}}) {{
                dimensions {{ modelId }} sum {{ totalNeurons }} }} }} }} }}""",
        )
    )
    total = neurons[(first["day"], SMALL)] + neurons[(second["day"], SMALL)]
    assert per_model == [
        {"dimensions": {"modelId": SMALL}, "sum": {"totalNeurons": pytest.approx(total)}}
    ]


@pytest.mark.parametrize(
    ("declared", "accepted"),
    [("string!", "string"), ("String!", "String"), ("Int!", None), ("Strin!", None)],
)
@pytest.mark.parametrize("schema_type", ["string", "String"])
def test_graphql_refuses_a_wrongly_typed_variable_as_a_graphql_server_does(
    emu: RunningEmulator, declared: str, accepted: str | None, schema_type: str
) -> None:
    emu.config.graphql_string_type = schema_type  # type: ignore[assignment]
    query = USAGE_QUERY.replace("string!", declared)
    answer = graphql(emu, query, {"acct": "a", "date": emu.stats()["day"]})
    if accepted == schema_type:
        assert groups_of(answer) == []
        return
    assert answer["data"] is None
    (error,) = answer["errors"]
    assert error["message"] and error["locations"] and "path" not in error


def test_graphql_refuses_malformed_queries_and_values(emu: RunningEmulator) -> None:
    for query, variables in [
        ('{ viewer { accounts(filter: {accountTag: "a"}) { nope } } }', {}),
        ("{ viewer { accounts", {}),
        (USAGE_QUERY, {"acct": "a", "date": "2026-13-45"}),
        (USAGE_QUERY, {"acct": "a"}),
    ]:
        answer = graphql(emu, query, variables)
        assert answer["data"] is None and answer["errors"], (query, answer)


def test_reset_clears_everything(emu: RunningEmulator, emu_client: httpx.Client) -> None:
    ok(emu_client.post(f"/run/{SMALL}", json={"text": "x"}))
    emu.advance_day()
    emu.reset()
    stats = emu.stats()
    assert stats["requests_total"] == 0 and stats["models"] == {} and stats["neurons_today"] == 0
    assert stats["history"] == {stats["day"]: 0.0}


def test_config_endpoint_changes_knobs(emu: RunningEmulator) -> None:
    response = httpx.post(f"{emu.url}/__emulator/config", json={"latency_ms": 1.5})
    assert response.json()["latency_ms"] == 1.5 and emu.config.latency_ms == 1.5
    emu.config.latency_ms = 0.0
    assert httpx.post(f"{emu.url}/__emulator/config", json={"nope": 1}).status_code == 400
    bad = httpx.post(f"{emu.url}/__emulator/config", json={"error_rate": 5})
    assert bad.status_code == 400 and emu.config.error_rate == 0.0
