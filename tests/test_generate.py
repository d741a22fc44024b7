"""Text generation, without a server: job checks, templates, requests in each model's form,
reading answers (strings, parsed objects, fences, bad and cut-off JSON), typed columns and
the budget's worst case."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from click.testing import CliRunner

from pipelines.catalog.chat import prompt_tokens
from pipelines.catalog.models import get_model, list_models
from pipelines.cli import main
from pipelines.core.columns import KEY
from pipelines.core.errors import InvalidInput, TransportError, UnknownModel
from pipelines.job.load import load_job
from pipelines.tasks.generate import GenerateFamily, json_mode_body
from pipelines.tasks.generated import read_answer, structured_columns, structured_fields
from pipelines.tasks.registry import make_task

LLAMA = "@cf/meta/llama-3.1-8b-instruct-fp8"
SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "mixed"]},
        "topics": {"type": "array", "items": {"type": "string"}},
        "score": {"type": "integer"},
        "meta": {"type": "object", "properties": {"lang": {"type": "string"}}},
        "anything": {},
    },
    "required": ["sentiment"],
}


def job_file(tmp_path: Path, task: str, *, rows: list[dict[str, Any]] | None = None) -> Path:
    data = tmp_path / "reviews.csv"
    pl.DataFrame(rows or [{"id": "a", "text": "Great lamp", "stars": 5}]).write_csv(data)
    body = textwrap.dedent(task).strip("\n")
    text = (
        "name: gen\nsource: {kind: csv, path: reviews.csv, key: id}\ntask:\n"
        + textwrap.indent(body, "  ")
        + "\noutput: {path: out.parquet}\n"
    )
    path = tmp_path / "job.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def validate(path: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, ["validate", str(path)])
    return result.exit_code, result.output.splitlines()


# -- the job file ----------------------------------------------------------------------------


def test_a_column_the_prompt_names_but_the_input_lacks_is_one_located_error(
    tmp_path: Path,
) -> None:
    path = job_file(tmp_path, f'kind: generate\nmodel: "{LLAMA}"\nprompt: "Rate {{{{ review }}}}"')
    code, lines = validate(path)
    assert code == 2
    assert len(lines) == 1 and "no column 'review'" in lines[0] and "template" in lines[0], lines
    assert not any("Traceback" in line for line in lines)


def test_a_column_read_as_row_item_is_checked_too(tmp_path: Path) -> None:
    rows = [{"id": "a", "review text": "ok"}]
    ok = job_file(
        tmp_path,
        f'kind: generate\nmodel: "{LLAMA}"\nprompt: "{{{{ row[\'review text\'] }}}}"',
        rows=rows,
    )
    assert validate(ok)[0] == 0
    bad = job_file(
        tmp_path,
        f'kind: generate\nmodel: "{LLAMA}"\nprompt: "{{{{ row[\'review txt\'] }}}}"',
        rows=rows,
    )
    code, lines = validate(bad)
    assert code == 2 and any("'review txt'" in line for line in lines), lines


def test_template_syntax_errors_are_located_at_their_field(tmp_path: Path) -> None:
    path = job_file(tmp_path, f'kind: generate\nmodel: "{LLAMA}"\nprompt: "Rate {{{{ text "')
    code, lines = validate(path)
    assert code == 2
    assert any("task.prompt" in line and "template error" in line for line in lines), lines


@pytest.mark.parametrize(
    ("task", "says"),
    [
        (f'kind: generate\nmodel: "{LLAMA}"', "set either task.prompt or task.messages"),
        (
            f'kind: generate\nmodel: "{LLAMA}"\nprompt: "x {{{{ text }}}}"\n'
            "messages: [{role: user, content: hi}]",
            "set either task.prompt or task.messages",
        ),
        (
            f'kind: generate\nmodel: "{LLAMA}"\nprompt: "{{{{ text }}}}"\ninput: text',
            "read the columns their prompt names",
        ),
        (
            'kind: generate\nmodel: "@cf/meta/llama-3.2-1b-instruct"\nprompt: "{{ text }}"\n'
            "output_schema: {type: object, properties: {a: {type: string}}}",
            "has no JSON mode",
        ),
        (
            f'kind: generate\nmodel: "{LLAMA}"\nprompt: "{{{{ text }}}}"\n'
            "output_schema: {type: object, properties: {prompt_tokens: {type: string}}}",
            "already a generate result",
        ),
        (
            f'kind: generate\nmodel: "{LLAMA}"\nprompt: "{{{{ text }}}}"\n'
            "output_schema: {type: array}",
            "must describe an object",
        ),
        (
            f'kind: generate\nmodel: "{LLAMA}"\nprompt: "{{{{ text }}}}"\n'
            "output_schema: {type: object, properties: {a: {type: 12}}}",
            "not a valid JSON Schema",
        ),
        (
            f'kind: generate\nmodel: "{LLAMA}"\nprompt: "{{{{ text }}}}"\n'
            "output_schema: missing.json",
            "cannot read",
        ),
        (
            f'kind: generate\nmodel: "{LLAMA}"\nprompt: "{{{{ text }}}}"\n'
            "params: {max_tokens: 32000}",
            "context window",
        ),
        (
            f'kind: generate\nmodel: "{LLAMA}"\nprompt: "{{{{ text }}}}"\nparams: {{stream: true}}',
            "do not stream",
        ),
        (
            f'kind: generate\nmodel: "{LLAMA}"\nprompt: "{{{{ text }}}}"\n'
            "params: {response_format: {type: json_object}}",
            "task.output_schema",
        ),
        (
            'kind: embed\nmodel: "@cf/baai/bge-small-en-v1.5"\ninput: text\nprompt: hi',
            "only applies",
        ),
    ],
)
def test_generate_job_problems_are_load_errors(tmp_path: Path, task: str, says: str) -> None:
    code, lines = validate(job_file(tmp_path, task))
    assert code == 2, lines
    assert any(says in line for line in lines), lines


def test_a_deprecated_model_is_refused_with_its_replacement(tmp_path: Path) -> None:
    with pytest.raises(UnknownModel) as info:
        get_model("@cf/meta/llama-3.1-8b-instruct")
    assert "deprecated" in info.value.message and LLAMA in info.value.message
    path = job_file(
        tmp_path, 'kind: generate\nmodel: "@cf/google/gemma-3-12b-it"\nprompt: "{{ text }}"'
    )
    code, lines = validate(path)
    assert code == 2 and any("gemma-4-26b-a4b-it" in line for line in lines), lines


def test_an_output_schema_file_is_read_relative_to_the_job(tmp_path: Path) -> None:
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    path = job_file(
        tmp_path,
        f'kind: generate\nmodel: "{LLAMA}"\nprompt: "{{{{ text }}}}"\noutput_schema: schema.json',
    )
    job = load_job(path)
    assert job.task.output_schema == SCHEMA


def test_the_catalog_has_every_current_chat_model_with_its_facts() -> None:
    chat = {m.id: m for m in list_models() if m.task == "generate"}
    for short in (
        "llama-3.2-1b-instruct",
        "llama-3.2-3b-instruct",
        "llama-3.1-8b-instruct-fp8",
        "llama-3.3-70b-instruct-fp8-fast",
        "mistral-small-3.1-24b-instruct",
        "qwen3-30b-a3b-fp8",
        "gpt-oss-20b",
        "gpt-oss-120b",
        "gemma-4-26b-a4b-it",
    ):
        (model,) = [m for m in chat.values() if m.short_name == short]
        assert model.neurons_per_m_input > 0 and model.neurons_per_m_output > 0
        assert model.context_window and model.default_max_tokens
        assert model.request_form in ("messages", "chat")
        assert model.rpm == 300 and not model.paid_only
    assert chat["@cf/qwen/qwen3-30b-a3b-fp8"].default_max_tokens == 2000
    assert chat["@cf/mistralai/mistral-small-3.1-24b-instruct"].json_mode == "guided_json"
    assert chat["@cf/meta/llama-3.3-70b-instruct-fp8-fast"].batch_api
    assert chat["@cf/moonshotai/kimi-k2.6"].paid_only and chat["@cf/moonshotai/kimi-k2.6"].rpm == 20
    result = CliRunner().invoke(main, ["models"])
    assert "gpt-oss-120b" in result.output and "paid only" in result.output


# -- rows → requests -------------------------------------------------------------------------


def family(tmp_path: Path, task: str, rows: list[dict[str, Any]]) -> GenerateFamily:
    job = load_job(job_file(tmp_path, task, rows=rows))
    task_ = make_task(job, get_model(job.task.model), [])
    assert isinstance(task_.family, GenerateFamily)
    return task_.family


def batch(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame([{KEY: r["id"], **r} for r in rows])


def test_a_null_value_fails_its_row_and_identical_prompts_are_sent_once(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "text": "Great", "stars": 5},
        {"id": "b", "text": None, "stars": 1},
        {"id": "c", "text": "Great", "stars": 5},
    ]
    fam = family(
        tmp_path,
        f'kind: generate\nmodel: "{LLAMA}"\nsystem: "Be brief."\n'
        'prompt: "{{ stars }}: {{ text }}"',
        rows,
    )
    items = fam.items(batch(rows))
    assert [f.key for f in items.failures] == ["b"]
    assert "'text' is null" in items.failures[0].message
    assert len(items.distinct) == 1 and items.rows_of == ((0, 2),)
    messages = json.loads(items.distinct[0].text)
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "5: Great"},
    ]
    assert "None" not in items.distinct[0].text
    assert items.distinct[0].tokens == prompt_tokens(get_model(LLAMA), messages)


def test_the_sandbox_refuses_reaching_python_internals(tmp_path: Path) -> None:
    rows = [{"id": "a", "text": "x"}]
    fam = family(
        tmp_path,
        f'kind: generate\nmodel: "{LLAMA}"\nprompt: "{{{{ text.__class__.__mro__ }}}}"',
        rows,
    )
    items = fam.items(batch(rows))
    assert not items.distinct and "template failed" in items.failures[0].message


def test_a_prompt_over_the_context_window_fails_before_sending(tmp_path: Path) -> None:
    rows = [{"id": "a", "text": "word " * 40_000}, {"id": "b", "text": "x" * 3_000_000}]
    fam = family(tmp_path, f'kind: generate\nmodel: "{LLAMA}"\nprompt: "{{{{ text }}}}"', rows)
    items = fam.items(batch(rows))
    assert not items.distinct
    assert all("context window of 32,000" in f.message for f in items.failures)


@pytest.mark.parametrize(
    ("model", "where"),
    [
        (LLAMA, ("response_format", "json_schema")),
        ("@cf/mistralai/mistral-small-3.1-24b-instruct", ("guided_json",)),
        ("@cf/qwen/qwen3-30b-a3b-fp8", ("response_format", "json_schema", "schema")),
    ],
)
def test_the_schema_goes_in_the_models_json_mode_form(model: str, where: tuple[str, ...]) -> None:
    body: Any = json_mode_body(get_model(model), SCHEMA)
    for key in where:
        body = body[key]
    assert body == SCHEMA


def test_requests_carry_max_tokens_and_the_worst_case_holds_it(tmp_path: Path) -> None:
    rows = [{"id": "a", "text": "Great"}]
    fam = family(
        tmp_path,
        f'kind: generate\nmodel: "{LLAMA}"\nprompt: "{{{{ text }}}}"\n'
        "params: {max_tokens: 50, seed: 3}",
        rows,
    )
    items = fam.items(batch(rows))
    estimate = fam.estimate(items.distinct)
    n = items.distinct[0].tokens
    assert estimate.worst.output_tokens == 50 and estimate.worst.input_tokens >= n
    assert estimate.expected.output_tokens == 25  # max_tokens / 2 before any row is done
    fam.mean_output = 12.2
    assert fam.estimate(items.distinct).expected.output_tokens == 13


# -- answers -------------------------------------------------------------------------------


def test_answers_are_read_as_strings_objects_or_fenced_json() -> None:
    model = get_model(LLAMA)
    value = {"sentiment": "mixed", "topics": ["noise"], "score": 3.0}
    usage = {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}
    for response in (json.dumps(value), value, f"```json\n{json.dumps(value)}\n```"):
        got = read_answer(model, {"response": response, "usage": usage}, SCHEMA, 100)
        assert got.value == value and not got.truncated
        assert (got.prompt_tokens, got.completion_tokens) == (10, 20)


def test_a_chat_completion_gives_its_finish_reason() -> None:
    model = get_model("@cf/qwen/qwen3-30b-a3b-fp8")
    answer = {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": model.id,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi"},
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }
    got = read_answer(model, answer, None, 7)
    assert (got.text, got.finish_reason, got.truncated) == ("Hi", "length", True)


def test_an_answer_outside_the_schema_is_a_retryable_error_that_keeps_the_raw_text() -> None:
    model = get_model(LLAMA)
    with pytest.raises(TransportError) as info:
        read_answer(model, {"response": '{"sentiment": "great"}'}, SCHEMA, 100)
    assert "output_schema" in info.value.message and '"great"' in info.value.message
    with pytest.raises(TransportError):
        read_answer(model, {"response": "Sure! Here it is"}, SCHEMA, 100)
    with pytest.raises(TransportError):
        read_answer(model, {"response": None}, None, 100)  # null is never "None"


def test_json_cut_off_at_max_tokens_fails_the_row_without_retrying() -> None:
    model = get_model(LLAMA)
    answer = {
        "response": '{"sentiment": "pos',
        "usage": {"prompt_tokens": 3, "completion_tokens": 8},
    }
    with pytest.raises(InvalidInput) as info:
        read_answer(model, answer, SCHEMA, 8)
    assert "max_tokens" in info.value.message


def test_schema_properties_become_typed_columns() -> None:
    fields = {f.name: f.type for f in structured_fields(SCHEMA)}
    assert fields == {
        "sentiment": pa.string(),
        "topics": pa.list_(pa.string()),
        "score": pa.int64(),
        "meta": pa.struct([("lang", pa.string())]),
        "anything": pa.string(),
    }
    cols = structured_columns(
        SCHEMA, [{"sentiment": "mixed", "score": 2.0, "anything": [1, {"a": None}]}]
    )
    assert cols["score"].to_pylist() == [2] and cols["topics"].to_pylist() == [None]
    assert json.loads(cols["anything"][0].as_py()) == [1, {"a": None}]


def test_a_changed_prompt_or_schema_makes_the_output_another_runs(tmp_path: Path) -> None:
    from pipelines.output.identity import fingerprint, mismatch

    task = f'kind: generate\nmodel: "{LLAMA}"\nprompt: "Rate {{{{ text }}}}"'
    before = fingerprint(load_job(job_file(tmp_path, task)))
    meta = {"fingerprint": before.digest, "identity": json.dumps(before.parts)}
    for changed in (
        task.replace("Rate", "Score"),
        task + '\nsystem: "Be brief."',
        task + "\noutput_schema: {type: object, properties: {a: {type: string}}}",
    ):
        why = mismatch(
            tmp_path / "out.parquet", fingerprint(load_job(job_file(tmp_path, changed))), meta
        )
        assert why is not None and "--fresh" in why, changed
    assert (
        mismatch(tmp_path / "out.parquet", fingerprint(load_job(job_file(tmp_path, task))), meta)
        is None
    )


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, {"code": 5024, "message": "JSON Mode couldn't be met"}),  # the emulator's code
        (200, {"message": "JSON Mode couldn't be met"}),  # in a success: false envelope
        (400, {"code": 9999, "message": "Error: JSON Mode couldn't be met"}),  # another code
    ],
)
def test_json_mode_failures_are_asked_again_whatever_their_code_or_status(
    status: int, error: dict[str, Any]
) -> None:
    from pipelines.core.errors import JsonModeUnmet, Scope
    from pipelines.providers.refusals import error_from_response

    body = json.dumps({"success": False, "errors": [error], "messages": [], "result": {}})
    got = error_from_response(status, {}, body.encode(), model=LLAMA)
    assert isinstance(got, JsonModeUnmet) and got.scope is Scope.TRANSIENT and got.maybe_billed


@pytest.mark.parametrize(
    "model", [m.id for m in list_models() if m.task == "generate"], ids=lambda m: m.split("/")[-1]
)
def test_every_chat_model_takes_the_usual_params(tmp_path: Path, model: str) -> None:
    # gpt-oss nests its Prompt and Messages forms inside a oneOf branch: still its options
    task = f'kind: generate\nmodel: "{model}"\nprompt: "{{{{ text }}}}"\n'
    path = job_file(tmp_path, task + "params: {max_tokens: 50, seed: 3, temperature: 0}")
    code, lines = validate(path)
    assert code == 0, lines
