"""The emulator's model outputs: schema-valid for every catalog model, deterministic, plausible."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest
import soundfile as sf

from pipelines.catalog.models import ModelInfo, get_model, list_models
from pipelines.emulator import RunningEmulator

AUTH = {"Authorization": "Bearer test-token"}


def wav_bytes(seconds: float, rate: int = 16_000, fmt: str = "WAV") -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.2 * np.sin(2 * np.pi * 440 * t)).astype("float32"), rate, format=fmt)
    return buf.getvalue()


def output_errors(model: ModelInfo, output: Any) -> list[str]:
    """Schema errors, except the published schemas' own overlapping ``oneOf`` branches.

    Cloudflare's embedding schemas list an "Async response" branch with no required fields,
    which every object matches, so a correct ``{shape, data}`` answer matches two branches
    and strict ``oneOf`` fails. Such ambiguities are tolerated only if some branch matches.
    """
    if isinstance(output, bytes):  # a binary answer: the schema says its type, not its JSON
        from pipelines.media.images import inspect_image

        wanted = model.output_schema["contentType"].removeprefix("image/")
        return [] if inspect_image(output).format == wanted else [f"not a {wanted} image"]
    validator = jsonschema.Draft202012Validator(model.output_schema)
    return [
        e.message
        for e in validator.iter_errors(output)
        if not (e.validator == "oneOf" and "is valid under each of" in e.message)
    ]


def run(client: httpx.Client, model: str, **kwargs: Any) -> Any:
    response = client.post(f"/run/{model}", **kwargs)
    assert response.status_code == 200, response.text
    facts = get_model(model).image
    if facts is not None and facts.answer == "binary":
        # the image itself is the body, as the published output schema's contentType says
        assert response.headers["content-type"] == get_model(model).output_schema["contentType"]
        return response.content
    body = response.json()
    assert body["success"] is True and body["errors"] == [] and body["messages"] == []
    return body["result"]


SAMPLE_INPUTS: dict[str, list[dict[str, Any]]] = {
    "embed": [{"json": {"text": ["hello world", "a second text"]}}, {"json": {"text": "one"}}],
    "classify": [{"json": {"text": "What a wonderful day"}}],
    "rerank": [{"json": {"query": "cats", "contexts": [{"text": "cats purr"}, {"text": "tax"}]}}],
    "translate": [{"json": {"text": "Good morning", "target_lang": "es"}}],
    "generate": [{"json": {"messages": [{"role": "user", "content": "Say hello"}]}}],
    "image": [{"json": {"prompt": "a lighthouse at dusk"}}],
}


def _inputs(model: ModelInfo) -> list[dict[str, Any]]:
    if model.task != "transcribe":
        cases = list(SAMPLE_INPUTS[model.task])
        if model.id == "@cf/baai/bge-m3":
            cases += [
                {"json": {"query": "q", "contexts": [{"text": "a"}, {"text": "q b"}]}},
                {"json": {"contexts": [{"text": "a"}, {"text": "b"}]}},
            ]
        if model.task == "embed" and model.id.startswith("@cf/qwen/"):
            cases += [{"json": {"queries": ["q"], "documents": "d"}}]
        if "pooling" in str(model.input_schema):
            cases += [{"json": {"text": ["x"], "pooling": "cls"}}]
        if model.image is not None and model.image.sizable:
            cases += [{"json": {"prompt": "a lighthouse", "width": 256, "height": 320, "seed": 1}}]
        if model.request_form == "messages":
            cases += [{"json": {"prompt": "Say hello", "max_tokens": 4}}]
        return cases
    audio = wav_bytes(1.2)
    if model.wire == "base64":
        return [{"json": {"audio": base64.b64encode(audio).decode(), "vad_filter": True}}]
    return [
        {"content": audio, "headers": {"content-type": "audio/wav"}},
        {"json": {"audio": list(audio)}},
    ]


@pytest.mark.emulator(plan="paid")  # paid-only text models answer 403 on the free plan
@pytest.mark.parametrize("model", list_models(), ids=lambda m: m.short_name)
def test_every_output_validates_against_the_published_schema(
    emu_client: httpx.Client, model: ModelInfo
) -> None:
    for case in _inputs(model):
        out = run(emu_client, model.id, **case)
        assert output_errors(model, out) == [], (model.id, case.keys())


def test_embeddings_have_catalog_dimensions_and_unit_length(emu_client: httpx.Client) -> None:
    for model in (m for m in list_models() if m.task == "embed"):
        key = "text"
        out = run(emu_client, model.id, json={key: ["alpha beta", "gamma"]})
        vectors = np.asarray(out["data"], dtype=np.float64)
        assert out["shape"] == [2, model.dimensions] == list(vectors.shape)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        # dense like real embeddings, so response sizes are realistic
        assert np.count_nonzero(vectors) > 0.9 * vectors.size


def test_pooling_is_echoed_and_changes_the_vectors(emu_client: httpx.Client) -> None:
    model = "@cf/baai/bge-base-en-v1.5"
    mean = run(emu_client, model, json={"text": ["same text"]})
    cls = run(emu_client, model, json={"text": ["same text"], "pooling": "cls"})
    assert (mean["pooling"], cls["pooling"]) == ("mean", "cls")
    assert mean["data"] != cls["data"]


def _cos(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a), np.asarray(b)
    return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))


def test_outputs_are_deterministic_and_similar_texts_are_closer(
    emu_client: httpx.Client, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    texts = [
        "The cat sat on the warm mat",
        "A cat was sitting on the mat",
        "Quarterly revenue grew in European markets",
    ]
    model = "@cf/baai/bge-small-en-v1.5"
    first = run(emu_client, model, json={"text": texts})["data"]
    again = run(emu_client, model, json={"text": texts})["data"]
    assert first == again
    assert _cos(first[0], first[1]) > _cos(first[0], first[2]) + 0.2
    # the seed salts outputs: another seed, other vectors
    other = emulator_factory(seed=7)
    response = httpx.post(
        f"{other.base_url}/accounts/a/ai/run/{model}", json={"text": texts}, headers=AUTH
    )
    assert response.json()["result"]["data"] != first


def test_sentiment_follows_the_words(emu_client: httpx.Client) -> None:
    model = "@cf/huggingface/distilbert-sst-2-int8"
    good = run(emu_client, model, json={"text": "I love it, an excellent and wonderful film"})
    bad = run(emu_client, model, json={"text": "Terrible, boring and a waste of time"})
    negated = run(emu_client, model, json={"text": "This was not good at all"})
    assert good[0]["label"] == "POSITIVE" and good[0]["score"] > 0.9
    assert bad[0]["label"] == "NEGATIVE" and bad[0]["score"] > 0.9
    assert negated[0]["label"] == "NEGATIVE"
    assert good[0]["score"] + good[1]["score"] == pytest.approx(1.0)
    assert good[0]["score"] >= good[1]["score"]


def test_reranker_orders_by_overlap_and_honours_top_k(emu_client: httpx.Client) -> None:
    contexts = [{"text": "stock prices fell"}, {"text": "how to bake bread at home"}]
    body = {"query": "bake bread", "contexts": contexts}
    out = run(emu_client, "@cf/baai/bge-reranker-base", json=body)
    assert [r["id"] for r in out["response"]] == [1, 0]
    assert out["response"][0]["score"] > out["response"][1]["score"]
    top = run(emu_client, "@cf/baai/bge-reranker-base", json={**body, "top_k": 1})
    assert [r["id"] for r in top["response"]] == [1]


def test_bge_m3_query_form_ranks_contexts(emu_client: httpx.Client) -> None:
    body = {
        "query": "rainfall in spring",
        "contexts": [{"text": "the football final"}, {"text": "spring rainfall was high"}],
    }
    out = run(emu_client, "@cf/baai/bge-m3", json=body)
    assert out["response"][0]["id"] == 1
    plain = run(emu_client, "@cf/baai/bge-m3", json={"contexts": body["contexts"]})
    assert plain["shape"] == [2, 1024] and len(plain["response"]) == 2


def test_qwen3_embeds_queries_then_documents(emu_client: httpx.Client) -> None:
    model = "@cf/qwen/qwen3-embedding-0.6b"
    out = run(
        emu_client, model, json={"queries": "red apples", "documents": ["red apples", "tax law"]}
    )
    assert out["shape"] == [3, 1024]
    assert _cos(out["data"][0], out["data"][1]) > 0.99
    assert _cos(out["data"][0], out["data"][2]) < 0.5


def test_translation_accepts_codes_and_names(emu_client: httpx.Client) -> None:
    model = "@cf/meta/m2m100-1.2b"
    by_code = run(emu_client, model, json={"text": "Hello world", "target_lang": "fr"})
    by_name = run(emu_client, model, json={"text": "Hello world", "target_lang": "French"})
    german = run(emu_client, model, json={"text": "Hello world", "target_lang": "de"})
    assert by_code == by_name
    assert by_code["translated_text"].startswith("[fr] ")
    assert german["translated_text"] != by_code["translated_text"]


def test_whisper_word_timings_follow_the_real_duration(emu_client: httpx.Client) -> None:
    for seconds in (0.7, 3.3):
        audio = wav_bytes(seconds)
        out = run(
            emu_client, "@cf/openai/whisper", content=audio, headers={"content-type": "audio/wav"}
        )
        words = out["words"]
        assert out["word_count"] == len(words) >= 1
        starts = [w["start"] for w in words]
        assert starts[0] >= 0 and starts == sorted(starts)
        assert all(w["end"] >= w["start"] for w in words)
        assert abs(words[-1]["end"] - seconds) < 0.1
        assert out["vtt"].startswith("WEBVTT")
        # the JSON uint8 form decodes to the same audio, hence the same transcript
        assert run(emu_client, "@cf/openai/whisper", json={"audio": list(audio)}) == out


def test_whisper_turbo_reports_duration_and_segments(emu_client: httpx.Client) -> None:
    audio = wav_bytes(7.5, fmt="FLAC")
    body = {"audio": base64.b64encode(audio).decode(), "language": "de", "prefix": "Hallo"}
    out = run(emu_client, "@cf/openai/whisper-large-v3-turbo", json=body)
    info = out["transcription_info"]
    assert info["language"] == "de"
    assert info["duration"] == pytest.approx(7.5, abs=0.01)
    assert info["duration_after_vad"] == pytest.approx(7.5, abs=0.01)
    segments = out["segments"]
    assert segments[0]["start"] == 0 and abs(segments[-1]["end"] - 7.5) < 0.1
    assert all(s["words"] for s in segments)
    assert out["text"].startswith("Hallo ")
    assert out["word_count"] == len(out["text"].split())


def test_model_ids_route_with_slashes(emu_client: httpx.Client) -> None:
    assert get_model("@cf/baai/bge-small-en-v1.5").dimensions == 384
    out = run(emu_client, "@cf/baai/bge-small-en-v1.5", json={"text": "x"})
    assert out["shape"] == [1, 384]
