"""The model catalog: facts, schemas and the ``pipelines models`` command."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pipelines.catalog.metering import Usage, neurons
from pipelines.catalog.models import get_model, list_models
from pipelines.catalog.tokens import count_tokens, estimate_tokens, truncate_to_tokens
from pipelines.cli import main
from pipelines.core.errors import UnknownModel

REQUIRED = {
    "@cf/baai/bge-small-en-v1.5",
    "@cf/baai/bge-base-en-v1.5",
    "@cf/baai/bge-large-en-v1.5",
    "@cf/baai/bge-m3",
    "@cf/qwen/qwen3-embedding-0.6b",
    "@cf/huggingface/distilbert-sst-2-int8",
    "@cf/baai/bge-reranker-base",
    "@cf/meta/m2m100-1.2b",
    "@cf/openai/whisper",
    "@cf/openai/whisper-tiny-en",
    "@cf/openai/whisper-large-v3-turbo",
}


def test_catalog_has_every_required_model_with_schemas() -> None:
    ids = {m.id for m in list_models()}
    assert REQUIRED <= ids
    for m in list_models():
        assert m.input_schema and m.output_schema, m.id
        assert m.rpm > 0 and m.max_items >= 1


def test_published_limits_and_prices() -> None:
    small = get_model("@cf/baai/bge-small-en-v1.5")
    assert (small.max_items, small.max_input_tokens, small.dimensions) == (100, 512, 384)
    assert small.neurons_per_m_input == 1841
    assert get_model("@cf/baai/bge-large-en-v1.5").rpm == 1500
    assert get_model("@cf/baai/bge-base-en-v1.5").rpm == 3000
    assert get_model("@cf/huggingface/distilbert-sst-2-int8").rpm == 2000
    assert get_model("@cf/meta/m2m100-1.2b").rpm == 720
    assert get_model("@cf/openai/whisper").rpm == 720
    assert get_model("@cf/qwen/qwen3-embedding-0.6b").max_items == 32
    assert get_model("@cf/openai/whisper").wire == "binary"
    assert get_model("@cf/openai/whisper-large-v3-turbo").wire == "base64"
    # the embedded schema agrees with the catalog's batch limit
    text = small.input_schema["oneOf"][0]["properties"]["text"]["oneOf"][1]
    assert text["maxItems"] == small.max_items


def test_unknown_model_error_points_at_the_command() -> None:
    with pytest.raises(UnknownModel, match="pipelines models"):
        get_model("@cf/foo")


def test_neurons_follow_published_prices() -> None:
    m2m = get_model("@cf/meta/m2m100-1.2b")
    assert neurons(m2m, Usage(input_tokens=1_000_000, output_tokens=500_000)) == pytest.approx(
        31050 * 1.5
    )
    whisper = get_model("@cf/openai/whisper")
    assert neurons(whisper, Usage(audio_seconds=90)) == pytest.approx(41.14 * 1.5)


def test_bert_tokens_are_exact_wordpiece_counts() -> None:
    # [CLS] hello world [SEP]
    assert count_tokens("bert-uncased", "Hello World") == 4
    # "tokenization" splits into word pieces: token ##ization
    assert count_tokens("bert-uncased", "tokenization") == 4
    # the calibrated estimate counts its special tokens, then the text
    assert estimate_tokens("xlm-roberta", "") == 2
    assert 3 <= estimate_tokens("xlm-roberta", "the") <= 4
    cut = truncate_to_tokens("bert-uncased", "one two three four five six", 5)
    assert cut == "one two three"
    assert count_tokens("bert-uncased", cut) <= 5


def test_models_command_table_and_json() -> None:
    runner = CliRunner()
    table = runner.invoke(main, ["models"])
    assert table.exit_code == 0
    assert "@cf/baai/bge-large-en-v1.5" in table.output and "1500" in table.output
    as_json = runner.invoke(main, ["models", "--json"])
    rows = json.loads(as_json.output)
    assert {r["id"] for r in rows} >= REQUIRED
