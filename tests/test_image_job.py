"""The job file of an image job: what it must say, what its model takes (checked against the
published input schema, ranges included), and where its image folder may be. Every problem
is one located line, all at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipelines.cli import main
from pipelines.core.errors import JobError
from pipelines.job.load import load_job
from pipelines.output.identity import fingerprint, mismatch

FLUX = "@cf/black-forest-labs/flux-1-schnell"
SDXL = "@cf/bytedance/stable-diffusion-xl-lightning"
PHOENIX = "@cf/leonardo/phoenix-1.0"
LUCID = "@cf/leonardo/lucid-origin"


def job_text(model: str = SDXL, task: str = "", output: str = "", kind: str = "image") -> str:
    return (
        "name: pics\n"
        "source: {kind: csv, path: in.csv, key: id}\n"
        "task:\n"
        f"  kind: {kind}\n"
        f'  model: "{model}"\n'
        '  prompt: "A photo of {{ title }}"\n'
        f"{task}"
        "output:\n"
        "  path: out/index.parquet\n"
        f"{output if output else '  images: out/images'}\n"
    )


def write(tmp: Path, text: str) -> Path:
    (tmp / "in.csv").write_text("id,title,seed\n1,a chair,3\n", encoding="utf-8")
    path = tmp / "job.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(JobError) as info:
        load_job(path)
    return [line.removeprefix(f"{path}:") for line in info.value.message.splitlines()]


def test_a_valid_image_job_loads_and_validates(tmp_path: Path) -> None:
    text = job_text(task="  negative_prompt: blurry\n  seed_column: seed\n  params: {width: 512}\n")
    path = write(tmp_path, text)
    job = load_job(path)
    assert job.images_path == tmp_path / "out" / "images"
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 0 and result.output.startswith("ok "), result.output


def test_what_an_image_job_must_say_is_reported_at_once(tmp_path: Path) -> None:
    text = job_text(task="  input: title\n  truncate: true\n  system: be nice\n")
    text = text.replace('  prompt: "A photo of {{ title }}"\n', "")
    found = problems(write(tmp_path, text.replace("  images: out/images\n", "  keep: [id]\n")))
    assert any("task.input: image jobs read the columns their prompt names" in p for p in found)
    assert any("task.truncate: does not apply to image jobs" in p for p in found)
    assert any("task.system: only applies to task.kind: generate" in p for p in found)
    assert any("task.prompt: image jobs need a prompt" in p for p in found)
    assert any("output.images: image jobs need a folder" in p for p in found)


def test_image_keys_on_other_jobs_are_refused(tmp_path: Path) -> None:
    text = (
        "name: x\nsource: {kind: csv, path: in.csv, key: id}\n"
        'task: {kind: embed, model: "@cf/baai/bge-small-en-v1.5", input: title,'
        " negative_prompt: blurry, seed_column: seed}\n"
        "output: {path: out.parquet, images: imgs}\n"
    )
    found = problems(write(tmp_path, text))
    assert sum("only applies to task.kind: image" in p for p in found) == 2
    assert any("output.images: only image jobs write image files" in p for p in found)


@pytest.mark.parametrize(
    ("model", "task", "expected"),
    [
        (
            FLUX,
            "  negative_prompt: blurry\n",
            "task.negative_prompt: " + FLUX + " takes no negative",
        ),
        (FLUX, "  seed_column: seed\n", "task.seed_column: " + FLUX + " takes no seed"),
        (FLUX, "  params: {width: 512}\n", "task.params.width: not an option of " + FLUX),
        (FLUX, "  params: {steps: 9}\n", "task.params.steps: must be at most 8 (got 9)"),
        (SDXL, "  params: {num_steps: 21}\n", "task.params.num_steps: must be at most 20"),
        (SDXL, "  params: {width: 100}\n", "task.params.width: must be at least 256 (got 100)"),
        (SDXL, "  params: {strength: 0.5}\n", "task.params.strength: image jobs draw from prompts"),
        (SDXL, "  params: {prompt: x}\n", "task.params.prompt: set by pipelines from task.prompt"),
        (
            SDXL,
            "  seed_column: seed\n  params: {seed: 4}\n",
            "task.params.seed: give params.seed (every row) or task.seed_column",
        ),
        (PHOENIX, "  params: {guidance: 1}\n", "task.params.guidance: must be at least 2"),
        (PHOENIX, "  params: {height: 0}\n", "task.params.height: must be at least 1"),
        (PHOENIX, "  params: {num_steps: 2.5}\n", "task.params.num_steps: must be a integer"),
        (LUCID, "  params: {steps: 4, num_steps: 4}\n", "give one of them, not both"),
        (SDXL, "  negative_prompt: '{{ oops'\n", "task.negative_prompt: template error"),
    ],
)
def test_what_the_model_takes_is_checked_at_load(
    tmp_path: Path, model: str, task: str, expected: str
) -> None:
    found = problems(write(tmp_path, job_text(model, task)))
    assert any(expected in p for p in found), found


def test_the_images_folder_never_touches_the_input_or_the_other_paths(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "in.csv").write_text("id,title\n1,a\n", encoding="utf-8")
    text = job_text(output="  images: data/pics").replace("path: in.csv", "path: data")
    found = problems(write(tmp_path, text))
    assert any("output.images: " in p and "inside the input" in p for p in found), found
    for folder, why in [
        ("out/index.parquet", "is the output, or inside it"),
        ("out/.index.parquet.pipelines/x", "is its work folder, or inside it"),
    ]:
        found = problems(write(tmp_path, job_text(output=f"  images: {folder}")))
        assert any(why in p for p in found), found
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    found = problems(write(tmp_path, job_text(output="  images: a-file")))
    assert any("is a file, not a folder" in p for p in found), found
    # a glob that would read the images back
    text = job_text(output="  images: parts").replace("path: in.csv", "path: 'parts/*'")
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "in.csv").write_text("id,title\n1,a\n", encoding="utf-8")
    found = problems(write(tmp_path, text))
    assert any("would be read back as input" in p for p in found), found


def test_a_seed_column_the_input_lacks_is_a_located_error(tmp_path: Path) -> None:
    path = write(tmp_path, job_text(task="  seed_column: nope\n"))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert "no column 'nope' (named by task.seed_column)" in result.output, result.output


def test_changing_what_draws_the_pictures_or_where_they_go_needs_fresh(tmp_path: Path) -> None:
    base = load_job(write(tmp_path, job_text()))
    stored = fingerprint(base).parts
    for task, output in [
        ("  negative_prompt: blurry\n", ""),
        ("  seed_column: seed\n", ""),
        ("", "  images: elsewhere"),
    ]:
        other = load_job(write(tmp_path, job_text(task=task, output=output)))
        meta = {"identity": json.dumps(stored), "fingerprint": "the old digest"}
        why = mismatch(tmp_path / "out" / "index.parquet", fingerprint(other), meta)
        assert why is not None and "--fresh" in why, (task, output)
