"""Job file loading: every problem as FILE:LINE: field: message, all of them at once."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pipelines.catalog.languages import LANGUAGE_CODES, normalize_language
from pipelines.catalog.models import schema_properties
from pipelines.core.errors import JobError
from pipelines.job.load import load_job, load_jobs
from pipelines.job.spec import Job

REPO = Path(__file__).resolve().parents[1]

GOOD = """\
name: demo
source:
  kind: csv
  path: data.csv
task:
  kind: embed
  model: "@cf/baai/bge-small-en-v1.5"
  input: text
output:
  path: out.parquet
"""


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def errors(path: Path) -> list[str]:
    with pytest.raises(JobError) as info:
        load_job(path)
    return info.value.message.splitlines()


def test_good_job_loads_and_resolves_paths_against_its_folder(tmp_path: Path) -> None:
    job = load_job(write(tmp_path, GOOD))
    assert isinstance(job, Job)
    assert job.base_dir == tmp_path.resolve()
    assert job.output_path == tmp_path.resolve() / "out.parquet"
    assert job.file == tmp_path / "job.yaml"


def test_unknown_model_has_the_exact_message(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("@cf/baai/bge-small-en-v1.5", "@cf/foo"))
    assert errors(path) == [
        f"{path}:7: task.model: unknown model '@cf/foo' (see: pipelines models)"
    ]


def test_unknown_key_points_at_its_line_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("  input: text\n", "  input: text\n  inptu: x\n"))
    (line,) = errors(path)
    assert line.startswith(f"{path}:9: task.inptu: unknown key (did you mean 'input'?")


def test_wrong_type_and_all_problems_are_collected(tmp_path: Path) -> None:
    text = GOOD + "limits:\n  concurrency: lots\n  batch_size: 0\nbogus: 1\n"
    lines = errors(write(tmp_path, text))
    assert len(lines) == 3
    assert ":12: limits.concurrency: input should be a valid integer" in lines[0]
    assert ":13: limits.batch_size: input should be greater than 0" in lines[1]
    assert ":14: bogus: unknown key" in lines[2]


def test_missing_required_keys(tmp_path: Path) -> None:
    lines = errors(write(tmp_path, "name: x\ntask:\n  kind: embed\n"))
    assert any(":1: source: required key is missing" in line for line in lines)
    assert any(":2: task.model: required key is missing" in line for line in lines)


def test_kind_mismatch_and_reranker(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("kind: embed", "kind: classify"))
    (line,) = errors(path)
    assert ":7: task.model: @cf/baai/bge-small-en-v1.5 is a model for embed, not classify" in line
    rerank = GOOD.replace("@cf/baai/bge-small-en-v1.5", "@cf/baai/bge-reranker-base")
    (line,) = errors(write(tmp_path, rerank))
    assert "is a reranker; reranking is not a job task" in line


def test_input_required_and_audio_only_for_transcribe(tmp_path: Path) -> None:
    lines = errors(write(tmp_path, GOOD.replace("  input: text\n", "")))
    assert lines == [
        f"{tmp_path / 'job.yaml'}:5: task.input: required for embed jobs: the text column"
    ]
    text = GOOD.replace("kind: csv", "kind: audio")
    (line,) = errors(write(tmp_path, text))
    assert ":3: source.kind: audio sources only work with task.kind: transcribe" in line
    whisper = GOOD.replace("kind: embed", "kind: transcribe").replace(
        "@cf/baai/bge-small-en-v1.5", "@cf/openai/whisper"
    )
    lines = errors(write(tmp_path, whisper))
    assert any("source.kind: transcribe jobs read audio" in line for line in lines)
    assert any("task.input: not used by transcribe jobs" in line for line in lines)


TRANSLATE = """\
name: tr
source: {kind: csv, path: data.csv}
task:
  kind: translate
  model: "@cf/meta/m2m100-1.2b"
  input: text
  params:
    target_lang: %s
output: {path: out.parquet}
"""


def test_languages_are_checked_and_names_normalised(tmp_path: Path) -> None:
    (line,) = errors(write(tmp_path, TRANSLATE % "xx"))
    assert ":8: task.params.target_lang: unsupported language 'xx'; use one of: af, am, ar" in line
    job = load_job(write(tmp_path, TRANSLATE % "French"))
    assert job.task.params == {"target_lang": "fr"}
    assert job.base_dir == tmp_path.resolve()


def test_translate_needs_a_target(tmp_path: Path) -> None:
    text = TRANSLATE.replace("  params:\n    target_lang: %s\n", "")
    (line,) = errors(write(tmp_path, text))
    assert "task.params.target_lang: translate jobs need params.target_lang" in line
    text = TRANSLATE.replace("  params:\n    target_lang: %s\n", "  target_lang_column: t\n")
    assert load_job(write(tmp_path, text)).task.target_lang_column == "t"


def test_params_are_checked_against_the_model_schema(tmp_path: Path) -> None:
    text = GOOD.replace("  input: text\n", "  input: text\n  params: {pooling: max, text: hi}\n")
    lines = errors(write(tmp_path, text))
    assert any("task.params.pooling: must be one of 'mean', 'cls' (got 'max')" in x for x in lines)
    assert any("task.params.text: set by pipelines from the task.input column" in x for x in lines)
    text = GOOD.replace("  input: text\n", "  input: text\n  params: {nope: 1}\n")
    (line,) = errors(write(tmp_path, text))
    assert "not an option of @cf/baai/bge-small-en-v1.5 (it accepts: pooling)" in line


def test_option_branches_are_merged() -> None:
    from pipelines.catalog.models import get_model

    props = schema_properties(get_model("@cf/baai/bge-m3").input_schema)
    assert {"text", "contexts", "query", "truncate_inputs", "requests"} <= set(props)


def test_batch_size_over_the_model_limit(tmp_path: Path) -> None:
    (line,) = errors(write(tmp_path, GOOD + "limits:\n  batch_size: 101\n"))
    assert ":12: limits.batch_size: 101 is over" in line
    assert "limit of 100 items per request" in line


def test_output_must_not_be_the_input(tmp_path: Path) -> None:
    (line,) = errors(write(tmp_path, GOOD.replace("path: out.parquet", "path: ./data.csv")))
    assert ":10: output.path: would overwrite or be read back as the input" in line
    text = GOOD.replace("path: data.csv", "path: 'parts/*.parquet'").replace(
        "path: out.parquet", "path: parts/out.parquet"
    )
    text = text.replace("kind: csv", "kind: parquet")
    assert any("output.path" in x for x in errors(write(tmp_path, text)))


@pytest.mark.parametrize("key", ["token", "api_token", "CLOUDFLARE_API_TOKEN"])
def test_token_keys_are_refused_anywhere(tmp_path: Path, key: str) -> None:
    text = GOOD.replace("  input: text\n", f"  input: text\n  params:\n    {key}: abc123\n")
    (line,) = errors(write(tmp_path, text))
    assert line == (
        f"{tmp_path / 'job.yaml'}:10: task.params.{key}: the API token comes from "
        "CLOUDFLARE_API_TOKEN or CLOUDFLARE_API_TOKEN_FILE (the key of provider openai from "
        "OPENAI_API_KEY or OPENAI_API_KEY_FILE), never from the job file"
    )
    assert "abc123" not in line
    (line,) = errors(write(tmp_path, f"{key}: secret\n" + GOOD))
    assert line.startswith(f"{tmp_path / 'job.yaml'}:1: {key}: the API token comes from")


def test_duplicate_keys_are_reported(tmp_path: Path) -> None:
    (line,) = errors(write(tmp_path, GOOD + "name: again\n"))
    assert ":11: name: duplicate key" in line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: x\nsource: [1\n", ":3: invalid YAML: "),
        ("", ":1: the job file is empty"),
        ("# only a comment\n", ":1: the job file is empty"),
        ("- a\n- b\n", ":1: a job file must be a YAML mapping of keys to values, not a list"),
        ("just text\n", "not a str"),
    ],
)
def test_file_level_problems_are_one_line(tmp_path: Path, text: str, expected: str) -> None:
    (line,) = errors(write(tmp_path, text))
    assert expected in line


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert errors(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: no such job file"]
    (line,) = errors(tmp_path)
    assert "is a directory" in line


def test_load_jobs_orders_by_priority_then_name(tmp_path: Path) -> None:
    for name, prio in [("b", 0), ("a", 0), ("c", 5)]:
        write(
            tmp_path, GOOD.replace("name: demo", f"name: {name}\npriority: {prio}"), f"{name}.yml"
        )
    (tmp_path / "notes.txt").write_text("not a job")
    assert [j.name for j in load_jobs([tmp_path])] == ["c", "a", "b"]


def test_load_jobs_reports_every_file_and_duplicate_names(tmp_path: Path) -> None:
    write(tmp_path, GOOD, "one.yaml")
    write(tmp_path, GOOD, "two.yaml")
    write(tmp_path, GOOD.replace("@cf/baai/bge-small-en-v1.5", "@cf/foo"), "three.yaml")
    with pytest.raises(JobError) as info:
        load_jobs([tmp_path])
    text = info.value.message
    assert "three.yaml:7: task.model: unknown model '@cf/foo'" in text
    assert "two.yaml:1: name: 'demo' is also the name of" in text
    with pytest.raises(JobError, match="no job files"):
        load_jobs([tmp_path / "empty"] if (tmp_path / "empty").mkdir() is None else [])


def test_language_list() -> None:
    assert len(LANGUAGE_CODES) == 100  # every language m2m100 knows
    assert normalize_language("German") == "de"
    assert normalize_language("pt-BR") == "pt"
    assert normalize_language("klingon") is None
    assert normalize_language("xx-YY") is None


def test_every_example_job_validates() -> None:
    jobs = load_jobs([REPO / "jobs"])
    assert {j.name for j in jobs} >= {
        "embed-corpus",
        "classify-reviews",
        "translate-phrases",
        "translate-titles",
    }
    embed = next(j for j in jobs if j.name == "embed-corpus")
    assert embed.output_path.resolve() == REPO / "out" / "corpus_embeddings.parquet"


def test_readme_example_is_a_valid_job(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("<!-- section: jobs -->", 1)[1].split("<!-- /section: jobs -->")[0]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    job = load_job(write(tmp_path, example))
    assert job.name == "embed-corpus"
    assert job.task.params == {"pooling": "cls"}
