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


IMAGE_MODELS = {
    "@cf/black-forest-labs/flux-1-schnell",
    "@cf/bytedance/stable-diffusion-xl-lightning",
    "@cf/stabilityai/stable-diffusion-xl-base-1.0",
    "@cf/lykon/dreamshaper-8-lcm",
    "@cf/leonardo/phoenix-1.0",
    "@cf/leonardo/lucid-origin",
}


def test_image_models_are_priced_per_tile_and_step_as_published() -> None:
    from pipelines.catalog.images import image_usage, tiles

    assert {m.id for m in list_models() if m.task == "image"} == IMAGE_MODELS
    for model_id in IMAGE_MODELS:
        model = get_model(model_id)
        assert model.image is not None and model.rpm == 720 and model.max_items == 1
    flux = get_model("@cf/black-forest-labs/flux-1-schnell")
    # no size in flux's schema: budgeted as 1024x1024, the upper reading (4 tiles)
    assert image_usage(flux, {}) == Usage(tiles=4, steps=4)
    assert neurons(flux, image_usage(flux, {"steps": 4})) == pytest.approx(57.6)
    assert neurons(flux, image_usage(flux, {"steps": 8})) == pytest.approx(96.0)
    assert int(10_000 // neurons(flux, image_usage(flux, {}))) == 173
    phoenix = get_model("@cf/leonardo/phoenix-1.0")
    assert neurons(phoenix, image_usage(phoenix, {})) == pytest.approx(4 * 530 + 25 * 10)
    lucid = get_model("@cf/leonardo/lucid-origin")
    # 1120 px a side is 3 tiles a side rounded up; no published default steps: the maximum
    assert image_usage(lucid, {}) == Usage(tiles=9, steps=40)
    assert image_usage(lucid, {"num_steps": 10, "width": 512, "height": 512}).steps == 10
    # sizes that are not multiples of 512 round up on each side, never under-counting
    assert (tiles(512, 512), tiles(513, 512), tiles(1000, 600), tiles(256, 256)) == (1, 2, 4, 1)
    for beta in ("stable-diffusion-xl-lightning", "stable-diffusion-xl-base-1.0"):
        model = next(m for m in list_models() if m.short_name == beta)
        assert model.image is not None and not model.image.priced
        assert neurons(model, image_usage(model, {})) == 0.0


def test_models_command_shows_image_prices() -> None:
    table = CliRunner().invoke(main, ["models"]).output
    assert "4.8/tile + 9.6/step" in table and "0 (beta, unpriced)" in table
    rows = json.loads(CliRunner().invoke(main, ["models", "--json"]).output)
    flux = next(r for r in rows if r["id"].endswith("flux-1-schnell"))
    assert flux["neurons_per_tile"] == 4.8 and flux["image"]["answer"] == "base64"
