"""Job and config files: every problem in one pass, each located and with a hint where one
helps ("did you mean"), an unquoted ``@`` explained, and column names that pipelines writes
itself refused at load."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pipelines.budget.config import load_global_budget
from pipelines.catalog.models import ModelInfo, list_models
from pipelines.cli import main
from pipelines.core.columns import KEY, ROW_HASH
from pipelines.core.errors import JobError
from pipelines.job.columns import FROM_INPUT, RESULT_COLUMNS
from pipelines.job.columns import added_columns as added_columns_of
from pipelines.job.load import load_job
from pipelines.job.spec import Job
from pipelines.sources.audio import COLUMNS as AUDIO_COLUMNS
from pipelines.tasks.registry import FAMILIES

REPO = Path(__file__).resolve().parents[1]
BGE = "@cf/baai/bge-small-en-v1.5"


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    """The problems ``load_job`` reports, without the ``FILE:`` prefix."""
    with pytest.raises(JobError) as info:
        load_job(path)
    lines = info.value.message.splitlines()
    assert all(line.startswith(f"{path}:") for line in lines), lines
    return [line.removeprefix(f"{path}:") for line in lines]


def validate(*paths: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, ["validate", *map(str, paths)])
    return result.exit_code, result.output.splitlines()


# -- all at once ------------------------------------------------------------------------------

# A shape error (concurrency), a wrong option (pooling), the output over the input and a batch
# too big for the model: before, the shape error hid the three others.
FOUR_AT_ONCE = f"""\
name: demo
source:
  kind: csv
  path: data.csv
task:
  kind: embed
  model: "{BGE}"
  input: text
  params: {{pooling: max}}
output:
  path: data.csv
limits:
  batch_size: 500
  concurrency: lots
"""


def test_shape_errors_and_job_rules_are_reported_together(tmp_path: Path) -> None:
    lines = problems(write(tmp_path, FOUR_AT_ONCE))
    assert len(lines) == 4, lines
    assert lines[0].startswith("9: task.params.pooling: must be one of 'mean', 'cls'")
    assert lines[1].startswith("11: output.path: would overwrite or be read back as the input")
    assert lines[2].startswith(f"13: limits.batch_size: 500 is over {BGE}'s limit of 100")
    assert lines[3].startswith("14: limits.concurrency: input should be a valid integer")


def test_an_unknown_model_skips_only_the_checks_that_need_it(tmp_path: Path) -> None:
    text = FOUR_AT_ONCE.replace("bge-small-en", "bge-smal-en").replace(
        "concurrency: lots", "concurrency: 0\nbudget: {reserve: 20000}"
    )
    lines = problems(write(tmp_path, text))
    assert [line.split(":")[1].strip() for line in lines] == [
        "task.model",
        "output.path",
        "limits.concurrency",
        "budget.reserve",
    ], lines
    assert f"did you mean '{BGE}'" in lines[0]  # the closest first
    assert lines[3] == "15: budget.reserve: must be below budget.daily_neurons"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # a task.kind nobody knows: no "this model is for embed, not ..." guessed from it
        (("kind: embed", "kind: embedd"), ["6: task.kind: input should be 'embed', 'classify'"]),
        # a source.kind nobody knows: its csv-only keys are not judged against a guess
        (
            ("  kind: csv\n", "  kind: csvv\n  extensions: [wav]\n"),
            ["3: source.kind: input should be 'csv', 'parquet' or 'audio'"],
        ),
        # task.input of the wrong type: not also reported as missing
        (("input: text", "input: [text]"), ["8: task.input: input should be a valid string"]),
        # a misspelt section: reported as unknown and missing, nothing guessed about the task
        (("task:", "tsak:"), ["1: task: required key is missing", "5: tsak: unknown key"]),
        # budget.daily_neurons broken: the reserve is not compared with a default
        (
            ("limits:\n", "budget: {daily_neurons: -1, reserve: 20000}\nlimits:\n"),
            ["12: budget.daily_neurons: input should be greater than 0"],
        ),
    ],
)
def test_a_broken_field_is_reported_once_and_the_other_rules_still_run(
    tmp_path: Path, change: tuple[str, str], expected: list[str]
) -> None:
    text = FOUR_AT_ONCE.replace("pooling: max", "pooling: cls").replace("concurrency: lots", "")
    text = text.replace("batch_size: 500", "batch_size: 50").replace(*change)
    lines = problems(write(tmp_path, text))
    clash = [line for line in lines if "output.path: would overwrite" in line]
    assert len(clash) == 1, lines  # the rules that do not read the broken field still run
    rest = [line for line in lines if line not in clash]
    assert len(rest) == len(expected), lines
    for line, start in zip(sorted(rest), sorted(expected), strict=True):
        assert line.startswith(start), lines


def test_validate_lists_the_file_problems_and_the_input_problems_in_one_pass(
    tmp_path: Path,
) -> None:
    (tmp_path / "data.csv").write_text("body\nhello\n", encoding="utf-8")
    text = FOUR_AT_ONCE.replace("path: data.csv\nlimits", "path: out.parquet\nlimits")
    job = write(tmp_path, text)
    code, lines = validate(job)
    assert code == 2
    assert len(lines) == 4, lines  # pooling, batch_size, concurrency, and the missing column
    assert lines[-1].startswith(f"{job}: source: ") and "no column 'text'" in lines[-1]


# -- did you mean -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("task:", "tsak:"), "5: tsak: unknown key (did you mean 'task'?"),
        (("output:", "outptu:"), "10: outptu: unknown key (did you mean 'output'?"),
        (("output:\n  path: data.csv\n", "output:\n  path: o\n  kepe: []\n"), "12: output.kepe"),
        (("kind: csv", "kind: parquett"), "3: source.kind: input should be"),
        (("name: demo", "name: demo\nprovider: cloudfare"), "2: provider: input should be"),
        (("pooling: max", "poolng: cls"), "9: task.params.poolng: not an option of"),
        (("pooling: max", "pooling: clss"), "9: task.params.pooling: must be one of"),
        (("bge-small-en", "bge-smal-en"), "7: task.model: unknown model"),
        (("@cf/baai/", ""), "7: task.model: unknown model 'bge-small-en-v1.5'"),
    ],
)
def test_misspellings_get_the_closest_known_name(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    guess = {
        "tsak": "task",
        "outptu": "output",
        "kepe": "keep",
        "parquett": "parquet",
        "cloudfare": "cloudflare",
        "poolng": "pooling",
        "clss": "cls",
    }
    text = FOUR_AT_ONCE.split("limits:")[0].replace(*change)
    lines = problems(write(tmp_path, text))
    (line,) = [x for x in lines if x.startswith(expected)]
    wrong = next((w for w in guess if w in change[1]), None)
    right = guess[wrong] if wrong else BGE
    assert f"did you mean '{right}'" in line, line


def test_no_suggestion_when_nothing_is_close(tmp_path: Path) -> None:
    text = FOUR_AT_ONCE.replace(BGE, "@cf/zzz/qqqqqq").replace("  concurrency: lots\n", "")
    lines = problems(write(tmp_path, text))
    assert "7: task.model: unknown model '@cf/zzz/qqqqqq' (see: pipelines models)" in lines


# -- an unquoted @ -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "hint"),
    [
        (f"  model: {BGE}", f'quote it: model: "{BGE}"'),
        (f"  model: {BGE}   # the small one", f'quote it: model: "{BGE}"'),
        (f"  model: `{BGE}`", f'quote it: model: "`{BGE}`"'),
    ],
)
def test_an_unquoted_at_sign_is_one_located_line_with_a_quoting_hint(
    tmp_path: Path, line: str, hint: str
) -> None:
    path = write(tmp_path, FOUR_AT_ONCE.replace(f'  model: "{BGE}"', line))
    (only,) = problems(path)
    assert only.startswith("7: ") and only.endswith(hint), only
    assert "cannot start any token" not in only


def test_an_unquoted_at_sign_in_a_flow_mapping(tmp_path: Path) -> None:
    text = f"name: x\nsource: {{kind: csv, path: d.csv}}\ntask: {{kind: embed, model: {BGE}}}\n"
    (only,) = problems(write(tmp_path, text))
    assert only.startswith("3: ") and only.endswith(f'quote it: model: "{BGE}"'), only


def test_run_with_an_unquoted_at_sign_prints_one_error_line_and_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, FOUR_AT_ONCE.replace(f'"{BGE}"', BGE))
    result = CliRunner().invoke(main, ["run", "--no-progress", str(path)])
    assert result.exit_code == 2
    (line,) = result.output.splitlines()
    assert line == f'error: {path}:7: a value cannot start with "@" unless quoted; ' + (
        f'quote it: model: "{BGE}"'
    )


# -- the global config file --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("budget:\n  daily_neurns: 5\n", ":2: budget.daily_neurns: unknown key (did you mean"),
        ("# mine\nbudget:\n  reserve: -1\n", ":3: budget.reserve: input should be greater"),
        ("budget:\n  daily_neurons: lots\n", ":2: budget.daily_neurons: input should be a valid"),
        ("other: 1\nbudget: [1, 2]\n", ":2: budget: input should be a valid dictionary"),
        ("budget:\n  reserve: 1\n  reserve: 2\n", ":3: budget.reserve: duplicate key"),
        ("budget: {daily_neurons: 5\n", ":2: invalid YAML"),
        ("- just a list\n", ":1: the config file must be a mapping"),
    ],
)
def test_config_file_problems_are_located(tmp_path: Path, text: str, expected: str) -> None:
    config = write(tmp_path, text, "config.yaml")
    with pytest.raises(JobError) as info:
        load_global_budget(config)
    assert info.value.message.startswith(f"{config}{expected}"), info.value.message
    assert info.value.exit_code == 2
    if "neurns" in text:
        assert "did you mean 'daily_neurons'?" in info.value.message


def test_config_file_reports_every_problem(tmp_path: Path) -> None:
    config = write(tmp_path, "budget:\n  daily_neurons: 0\n  reserv: 5\n", "config.yaml")
    with pytest.raises(JobError) as info:
        load_global_budget(config)
    lines = info.value.message.splitlines()
    assert [line.removeprefix(str(config))[:3] for line in lines] == [":2:", ":3:"], lines


# -- columns pipelines writes itself -----------------------------------------------------------


def _job_data(kind: str, model: ModelInfo) -> dict[str, Any]:
    """The smallest valid job of ``kind`` with ``model`` (as data, for building families)."""
    audio = kind == "transcribe"
    task: dict[str, Any] = {"kind": kind, "model": model.id}
    if kind in ("generate", "image"):
        task["prompt"] = "{{ text }}"
    elif not audio:
        task["input"] = "text"
    if kind == "translate":
        task["params"] = {"target_lang": "fr"}
    output = {"path": "out.parquet"} | ({"images": "images"} if kind == "image" else {})
    return {
        "name": "x",
        "source": {"kind": "audio" if audio else "csv", "path": "in"},
        "task": task,
        "output": output,
    }


def family_columns() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Each task kind's result columns as its family declares them (``fields``, over every
    catalog model of the kind), and those of them that are the source's own column of the
    same name (an audio file's ``path``): kept, the family leaves its copy out."""
    results: dict[str, set[str]] = {}
    shared: dict[str, set[str]] = {}
    for kind, family in FAMILIES.items():
        models = [m for m in list_models() if m.task == kind]
        assert models, kind
        source = set(AUDIO_COLUMNS) if kind == "transcribe" else set()
        for model in models:
            job = Job.model_validate(_job_data(kind, model))
            names = {field.name for field in family(job, model, []).fields}
            left_out = {
                n for n in names if n not in {f.name for f in family(job, model, [n]).fields}
            }
            results.setdefault(kind, set()).update(names)
            shared.setdefault(kind, set()).update(left_out & source)
    return results, shared


RESULTS, SHARED = family_columns()
# What pipelines writes into each row whatever the input holds: no input column may be named so.
ADDED = {kind: {KEY, ROW_HASH} | names - SHARED[kind] for kind, names in RESULTS.items()}
CASES = [(kind, name) for kind, names in sorted(ADDED.items()) for name in sorted(names)]


def _job_text(kind: str, tail: str = "", **task: str) -> str:
    model = next(m for m in list_models() if m.task == kind)
    data = _job_data(kind, model)
    data["task"].update(task)
    lines = ["name: x", f"source: {data['source']}".replace("'", ""), "task:"]
    lines += [
        f"  {k}: {v!r}" if k in ("model", "prompt") else f"  {k}: {v}"
        for k, v in data["task"].items()
    ]
    lines += ["output:", "  path: out.parquet"]
    lines += [f"  images: {data['output']['images']}"] if "images" in data["output"] else []
    lines += [tail]
    return "\n".join(lines).replace("{'target_lang': 'fr'}", "{target_lang: fr}") + "\n"


def test_the_job_layer_refuses_exactly_what_the_families_write() -> None:
    # the job layer sits below the tasks and keeps its own lists: they must not drift
    assert {kind: set(RESULT_COLUMNS[kind]) for kind in RESULTS} == RESULTS
    assert {kind: set(FROM_INPUT.get(kind, ())) for kind in SHARED} == SHARED
    assert {kind: set(added_columns_of(kind)) for kind in ADDED} == ADDED
    assert ADDED["classify"] == {KEY, ROW_HASH, "label", "score"}
    assert ADDED["transcribe"] >= {KEY, "text", "vtt", "words"}


def test_a_transcript_may_keep_the_audio_columns_it_shares_with_the_source(
    tmp_path: Path,
) -> None:
    # path and duration_s are the audio source's own values: kept, the family leaves its out
    job = load_job(write(tmp_path, _job_text("transcribe", "  keep: [path, duration_s, format]")))
    assert job.output.keep == ["path", "duration_s", "format"]


@pytest.mark.parametrize(("kind", "column"), CASES)
def test_keeping_a_column_pipelines_writes_is_refused_at_load(
    tmp_path: Path, kind: str, column: str
) -> None:
    text = _job_text(kind, f"  keep: [ok, {column}]")
    path = write(tmp_path, text)
    (line,) = problems(path)
    number = text.splitlines().index(f"  keep: [ok, {column}]") + 1
    assert line.startswith(f"{number}: output.keep[1]: {column!r} is a column pipelines "), line
    assert "rename it in the input" in line


@pytest.mark.parametrize(
    ("kind", "column"), [c for c in CASES if c[0] not in ("transcribe", "generate", "image")]
)
def test_reading_a_column_pipelines_writes_is_refused_at_load(
    tmp_path: Path, kind: str, column: str
) -> None:
    (line,) = problems(write(tmp_path, _job_text(kind, input=column)))
    assert line.startswith(f"6: task.input: {column!r} is a column pipelines "), line


@pytest.mark.parametrize("column", [KEY, ROW_HASH])
def test_a_template_reading_a_column_pipelines_adds_is_refused_at_load(
    tmp_path: Path, column: str
) -> None:
    text = _job_text("generate").replace("{{ text }}", "{{ text }} {{ " + column + " }}")
    (line,) = problems(write(tmp_path, text))
    assert f"task.prompt: {column!r} is a column pipelines " in line, line


def test_per_row_language_columns_named_like_the_key_are_refused(tmp_path: Path) -> None:
    text = _job_text("translate").replace("  params: {target_lang: fr}\n", "")
    text = text.replace("  input: text\n", "  input: text\n  target_lang_column: _key\n")
    (line,) = problems(write(tmp_path, text))
    assert line.startswith("7: task.target_lang_column: '_key' is a column pipelines "), line


def test_columns_of_other_kinds_and_a_key_column_named_key_are_fine(tmp_path: Path) -> None:
    # `label` is a classify result, not an embed one; a previous output's `_key` may key rows
    text = _job_text("embed", "  keep: [label, score, translated_text]")
    text = text.replace("path: in}", f"path: in, key: {KEY}}}")
    job = load_job(write(tmp_path, text))
    assert job.source.key == KEY
    assert job.output.keep == ["label", "score", "translated_text"]


def test_validate_and_run_refuse_a_kept_result_column_before_writing(tmp_path: Path) -> None:
    rows = "\n".join(f"{i},great film {i},positive" for i in range(5))
    (tmp_path / "in.csv").write_text("id,text,label\n" + rows + "\n", encoding="utf-8")
    text = _job_text("classify", "  keep: [id, label]").replace("path: in}", "path: in.csv}")
    path = write(tmp_path, text)
    code, lines = validate(path)
    assert code == 2
    (line,) = lines
    assert line.startswith(f"{path}:9: output.keep[1]: 'label' is a column pipelines "), line
    result = CliRunner().invoke(main, ["run", "--no-progress", "--provider", "emulator", str(path)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {path}:9: output.keep[1]: 'label'"), result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out.parquet").exists()


def test_readme_lists_the_columns_pipelines_writes_and_the_example_jobs() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("<!-- section: jobs -->", 1)[1].split("<!-- /section: jobs -->")[0]
    for names in ADDED.values():
        for name in names:
            assert f"`{name}`" in section, name
    count = len(list((REPO / "jobs").glob("*.yaml")))
    words = {4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}
    assert f"{words[count]} example jobs" in section
