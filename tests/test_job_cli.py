"""``pipelines validate`` and ``pipelines schema``."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml
from click.testing import CliRunner

from pipelines.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_validate_example_jobs() -> None:
    result = CliRunner().invoke(main, ["validate", str(REPO / "jobs")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(
        line.startswith("ok   ")
        and "embed_corpus.yaml (embed-corpus: 300 rows, @cf/baai/bge-small-en-v1.5)" in line
        for line in lines
    )
    assert len(lines) == len(list((REPO / "jobs").glob("*.yaml")))


def test_validate_reports_bad_jobs_and_exits_2(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "name: g\nsource: {kind: csv, path: in.csv}\n"
        "task: {kind: classify, model: '@cf/huggingface/distilbert-sst-2-int8', input: text}\n"
        "output: {path: out.parquet}\n"
    )
    (tmp_path / "in.csv").write_text("text\nnice\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("distilbert-sst-2-int8", "nope"))
    nocol = tmp_path / "nocol.yaml"
    nocol.write_text(good.read_text().replace("input: text", "input: body").replace("g\n", "n\n"))
    result = CliRunner().invoke(main, ["validate", str(good), str(bad), str(nocol)])
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert lines[0] == f"ok   {good} (g: 1 row, @cf/huggingface/distilbert-sst-2-int8)"
    assert lines[1] == (
        f"{bad}:3: task.model: unknown model '@cf/huggingface/nope' (see: pipelines models)"
    )
    assert lines[2].startswith(f"{nocol}: source: ") and "no column 'body'" in lines[2]


def test_validate_missing_path(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "no such job file" in result.output


def test_schema_is_json_schema_that_accepts_the_examples() -> None:
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(schema["properties"]) >= {"name", "source", "task", "output", "limits", "budget"}
    for path in (REPO / "jobs").glob("*.yaml"):
        jsonschema.validate(yaml.safe_load(path.read_text(encoding="utf-8")), schema)
