"""Inputs and other people's files are never modified or deleted (issue 11): every path a
job writes is checked against every input before anything is written (``validate`` and
``run``, ``--fresh`` included); outputs never share derived files; a job never takes over
another job's output without ``--fresh``; a mismatch says what differs; ``--fresh`` removes
exactly what the tool made; and a symbolic link at a written path is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import yaml
from click.testing import CliRunner

from pipelines.cli import main
from pipelines.core.errors import OutputError
from pipelines.job.load import load_job
from pipelines.job.paths import job_paths
from pipelines.output.store import OutputStore, fingerprint

BGE = "@cf/baai/bge-small-en-v1.5"
SST2 = "@cf/huggingface/distilbert-sst-2-int8"

pytestmark = pytest.mark.emulator(daily_neurons=1_000_000, rpm_scale=10)


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    if not isinstance(result.exception, SystemExit | None):
        raise AssertionError(f"uncaught {result.exception!r}") from result.exception
    return result.exit_code, result.stdout, result.stderr


def run(job: Path, *flags: str) -> tuple[int, str]:
    code, out, err = cli("run", "--no-progress", str(job), *flags)
    assert "Traceback" not in out + err
    return code, out + err


def validate(job: Path) -> tuple[int, str]:
    code, out, err = cli("validate", str(job))
    assert "Traceback" not in out + err
    return code, out + err


def one_error(text: str) -> str:
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    return errors[0]


def write_job(
    tmp: Path,
    *,
    name: str = "paths",
    source: dict[str, Any] | None = None,
    task: dict[str, Any] | None = None,
    output: dict[str, Any] | None = None,
    file: str = "job.yaml",
) -> Path:
    job = {
        "name": name,
        "source": {"kind": "csv", "path": "in.csv", "key": "id", **(source or {})},
        "task": {"kind": "embed", "model": BGE, "input": "text", **(task or {})},
        "output": {"path": "out.parquet", **(output or {})},
        "limits": {"concurrency": 2},
    }
    path = tmp / file
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def write_csv(path: Path, n: int = 3) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(
        {"id": [str(i) for i in range(n)], "text": [f"text number {i}" for i in range(n)]}
    ).write_csv(path)
    return path.read_bytes()


def write_parquet(path: Path, n: int = 3) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table({"id": [str(i) for i in range(n)], "text": [f"text {i}" for i in range(n)]}),
        path,
    )
    return path.read_bytes()


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and folder under ``folder`` (the state folder aside)."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
        if p.name != "job.yaml" and p.relative_to(folder).parts[0] != "state"
    }


# -- 1. every written path against every input -------------------------------------------


def test_an_input_named_like_the_failures_file_is_never_deleted(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # the reported case: validate said ok, run suggested --fresh, --fresh deleted the input
    data = write_parquet(tmp_path / "data.failures.parquet")
    job = write_job(
        tmp_path,
        source={"kind": "parquet", "path": "data.failures.parquet"},
        output={"path": "data.parquet"},
    )
    code, text = validate(job)
    assert code == 2, text
    assert "data.failures.parquet" in text and "output.path" in text
    before = tree(tmp_path)
    for flags in ((), ("--fresh",)):
        code, text = run(job, *flags)
        assert code == 2, text
        assert "failures" in one_error(text)
        assert tree(tmp_path) == before  # nothing written, nothing deleted
    assert (tmp_path / "data.failures.parquet").read_bytes() == data


def test_an_input_named_like_the_manifest_is_never_written_over(
    tmp_path: Path, env: dict[str, str]
) -> None:
    data = write_csv(tmp_path / "out.manifest.json")
    job = write_job(tmp_path, source={"path": "out.manifest.json"})
    code, text = validate(job)
    assert code == 2 and "manifest" in text, text
    code, text = run(job)
    assert code == 2 and "manifest" in one_error(text), text
    assert (tmp_path / "out.manifest.json").read_bytes() == data
    assert not (tmp_path / "out.parquet").exists()


def _lock_input(tmp: Path) -> Path:
    write_csv(tmp / ".out.parquet.lock")
    return write_job(tmp, source={"path": ".out.parquet.lock"})


def _input_in_work_folder(tmp: Path) -> Path:
    write_csv(tmp / ".out.parquet.pipelines" / "in.csv")
    return write_job(tmp, source={"path": ".out.parquet.pipelines/in.csv"})


def _input_is_the_work_folder(tmp: Path) -> Path:
    write_csv(tmp / ".out.parquet.pipelines" / "in.csv")
    return write_job(tmp, source={"path": ".out.parquet.pipelines"})


def _input_like_a_temporary_file(tmp: Path) -> Path:
    # what a crash leaves is swept at the next start: an input of that name would go too
    write_csv(tmp / ".out.parquet.tmp-0123abcd")
    return write_job(tmp, source={"path": ".out.parquet.tmp-0123abcd"})


def _input_through_dotdot(tmp: Path) -> Path:
    write_csv(tmp / "out.failures.parquet")
    (tmp / "sub").mkdir()
    return write_job(tmp, source={"path": "sub/../out.failures.parquet"})


def _input_hard_linked_to_the_manifest(tmp: Path) -> Path:
    write_csv(tmp / "in.csv")
    os.link(tmp / "in.csv", tmp / "out.manifest.json")
    return write_job(tmp)


def _input_through_a_linked_folder(tmp: Path) -> Path:
    write_csv(tmp / "real" / "out.manifest.json")
    (tmp / "link").symlink_to(tmp / "real", target_is_directory=True)
    return write_job(
        tmp, source={"path": "link/out.manifest.json"}, output={"path": "real/out.parquet"}
    )


def _output_inside_the_input_folder(tmp: Path) -> Path:
    write_csv(tmp / "data" / "a.csv")
    return write_job(tmp, source={"path": "data"}, output={"path": "data/result.parquet"})


def _glob_matches_a_derived_file(tmp: Path) -> Path:
    write_parquet(tmp / "parts" / "a.failures.parquet")
    return write_job(
        tmp,
        source={"kind": "parquet", "path": "parts/*.failures.parquet"},
        output={"path": "parts/x.parquet"},
    )


def _input_inside_the_subtitles_folder(tmp: Path) -> Path:
    folder = tmp / "out.subtitles"
    folder.mkdir()
    sf.write(folder / "a.wav", np.zeros(1600, dtype="float32"), 16_000)
    path = tmp / "job.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "subs",
                "source": {"kind": "audio", "path": "out.subtitles"},
                "task": {"kind": "transcribe", "model": "@cf/openai/whisper"},
                "output": {"path": "out.parquet", "vtt": True},
            }
        )
    )
    return path


@pytest.mark.parametrize(
    ("setup", "says"),
    [
        (_lock_input, "lock"),
        (_input_in_work_folder, "work folder"),
        (_input_is_the_work_folder, "work folder"),
        (_input_like_a_temporary_file, "temporary"),
        (_input_through_dotdot, "failures"),
        (_input_hard_linked_to_the_manifest, "manifest"),
        (_input_through_a_linked_folder, "manifest"),
        (_output_inside_the_input_folder, "input"),
        (_glob_matches_a_derived_file, "failures"),
        (_input_inside_the_subtitles_folder, "subtitles"),
    ],
)
def test_every_written_path_is_checked_against_every_input(
    setup: Any, says: str, tmp_path: Path, env: dict[str, str]
) -> None:
    job = setup(tmp_path)
    before = tree(tmp_path)
    code, text = validate(job)
    assert code == 2 and says in text, text
    for flags in ((), ("--fresh",)):
        code, text = run(job, *flags)
        assert code == 2, text
        assert says in one_error(text)
        assert tree(tmp_path) == before


# -- 2. outputs never share derived files --------------------------------------------------


@pytest.mark.parametrize("name", ["x.pq", "x.PARQUET", "x", "x.failures.parquet", ".parquet"])
def test_output_names_that_could_share_derived_files_are_refused(name: str, tmp_path: Path) -> None:
    write_csv(tmp_path / "in.csv")
    job = write_job(tmp_path, output={"path": f"out/{name}"})
    code, text = validate(job)
    assert code == 2, text
    assert "output.path" in text and ".parquet" in text


def test_derived_paths_are_unique_per_output(tmp_path: Path) -> None:
    names = ["a.parquet", "b.parquet", "a.b.parquet", "a.failures2.parquet", "a.manifest.parquet"]
    seen: dict[Path, str] = {}
    for name in names:
        paths = job_paths(tmp_path / name)
        for path in paths.written():
            assert path not in seen, (name, seen.get(path))
            seen[path] = name


# -- 3. another job's output is never taken over silently ---------------------------------


def test_another_jobs_output_is_refused_until_fresh(tmp_path: Path, env: dict[str, str]) -> None:
    write_csv(tmp_path / "in.csv")
    first = write_job(tmp_path, name="first")
    other = write_job(tmp_path, name="second", file="other.yaml")
    assert run(first)[0] == 0
    outputs = ("out.parquet", "out.failures.parquet", ".out.parquet.pipelines/meta.json")
    before = {name: (tmp_path / name).read_bytes() for name in outputs[::2]}
    code, text = run(other)
    assert code == 2, text
    line = one_error(text)
    assert "'first'" in line and "'second'" in line and "--fresh" in line
    assert {name: (tmp_path / name).read_bytes() for name in outputs[::2]} == before
    code, text = run(other, "--fresh")
    assert code == 0, text
    meta = pq.read_schema(tmp_path / "out.parquet").metadata
    assert meta[b"pipelines.job"] == b"second"


def test_the_same_job_reading_another_source_is_refused(
    tmp_path: Path, env: dict[str, str]
) -> None:
    write_csv(tmp_path / "in.csv")
    write_csv(tmp_path / "other.csv")
    assert run(write_job(tmp_path))[0] == 0
    code, text = run(write_job(tmp_path, source={"path": "other.csv"}))
    assert code == 2, text
    line = one_error(text)
    assert "in.csv" in line and "other.csv" in line and "--fresh" in line


def test_a_work_folder_left_by_another_job_is_refused(tmp_path: Path) -> None:
    write_csv(tmp_path / "in.csv")
    first = load_job(write_job(tmp_path, name="first"))
    second = load_job(write_job(tmp_path, name="second", file="two.yaml"))
    OutputStore(first.output_path, fingerprint=fingerprint(first), meta={}).open(fresh=False)
    store = OutputStore(second.output_path, fingerprint=fingerprint(second), meta={})
    with pytest.raises(OutputError, match="first"):
        store.open(fresh=False)
    store.open(fresh=True)  # taken over on request


# -- 4. a mismatch says what differs ---------------------------------------------------------


def test_a_provider_mismatch_names_both_producers(tmp_path: Path, env: dict[str, str]) -> None:
    # the README's local sample, then its --provider emulator rehearsal on the same output
    write_csv(tmp_path / "in.csv")
    job = write_job(tmp_path, task={"kind": "classify", "model": SST2})
    assert run(job, "--provider", "local")[0] == 0
    code, text = run(job, "--provider", "emulator")
    assert code == 2, text
    line = one_error(text)
    assert "local:" in line and f"emulator:{SST2}" in line
    assert "--fresh" in line and "output.path" in line
    assert "task, model or params" not in line


def test_a_params_mismatch_names_the_params(tmp_path: Path, env: dict[str, str]) -> None:
    write_csv(tmp_path / "in.csv")
    assert run(write_job(tmp_path))[0] == 0
    code, text = run(write_job(tmp_path, task={"params": {"pooling": "cls"}}))
    assert code == 2, text
    line = one_error(text)
    assert "params" in line and "cls" in line and "--fresh" in line


def test_changing_truncate_does_not_need_fresh(tmp_path: Path, env: dict[str, str]) -> None:
    write_csv(tmp_path / "in.csv")
    assert run(write_job(tmp_path))[0] == 0
    code, text = run(write_job(tmp_path, task={"truncate": True}))
    assert code == 0, text


# -- 5. --fresh removes exactly what the tool made, after every check ------------------------


def test_fresh_keeps_what_the_user_put_in_the_work_folder(
    tmp_path: Path, env: dict[str, str]
) -> None:
    write_csv(tmp_path / "in.csv")
    job = write_job(tmp_path)
    assert run(job)[0] == 0
    work = tmp_path / ".out.parquet.pipelines"
    (work / "sub").mkdir()
    (work / "sub" / "keep.txt").write_text("mine")
    (work / "notes.txt").write_text("mine too")
    stale = work / "results-stale.arrow"
    stale.write_bytes(b"a journal of an older run")
    code, text = run(job, "--fresh")
    assert code == 0, text
    assert (work / "sub" / "keep.txt").read_text() == "mine"
    assert (work / "notes.txt").read_text() == "mine too"
    assert not stale.exists()
    assert pl.read_parquet(tmp_path / "out.parquet").height == 3


@pytest.mark.parametrize("where", ["out.failures.parquet", "out.manifest.json"])
def test_fresh_deletes_nothing_when_a_later_check_fails(
    where: str, tmp_path: Path, env: dict[str, str]
) -> None:
    write_csv(tmp_path / "in.csv")
    job = write_job(tmp_path)
    assert run(job)[0] == 0
    # someone else's file where the tool would write a derived file
    if where.endswith(".parquet"):
        pq.write_table(pa.table({"precious": [1, 2]}), tmp_path / where)
    else:
        (tmp_path / where).write_text("my notes, not a manifest\n")
    before = tree(tmp_path)
    code, text = run(job, "--fresh")
    assert code == 2, text
    assert where in one_error(text)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("content", [b"my thesis, do not overwrite\n", None])
def test_fresh_never_deletes_a_file_pipelines_did_not_write(
    content: bytes | None, tmp_path: Path, env: dict[str, str]
) -> None:
    write_csv(tmp_path / "in.csv")
    output = tmp_path / "out.parquet"
    if content is None:
        pq.write_table(pa.table({"precious": [1, 2, 3]}), output)
    else:
        output.write_bytes(content)
    data = output.read_bytes()
    code, text = run(write_job(tmp_path), "--fresh")
    assert code == 2, text
    assert "move it away" in one_error(text)
    assert output.read_bytes() == data


def test_fresh_removes_the_subtitles_it_wrote_and_nothing_else(
    tmp_path: Path, env: dict[str, str]
) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    for name in ("a.wav", "b.wav"):
        sf.write(audio / name, 0.1 * np.ones(16_000, dtype="float32"), 16_000)
    job = tmp_path / "job.yaml"
    spec = {
        "name": "subs",
        "source": {"kind": "audio", "path": "audio"},
        "task": {"kind": "transcribe", "model": "@cf/openai/whisper"},
        "output": {"path": "out/t.parquet", "vtt": True},
    }
    job.write_text(yaml.safe_dump(spec))
    assert run(job)[0] == 0
    subs = tmp_path / "out" / "t.subtitles"
    assert sorted(p.name for p in subs.iterdir()) == ["a.wav.vtt", "b.wav.vtt"]
    (subs / "mine.txt").write_text("keep me")
    (audio / "b.wav").unlink()
    code, text = run(job, "--fresh")
    assert code == 0, text
    assert sorted(p.name for p in subs.iterdir()) == ["a.wav.vtt", "mine.txt"]


# -- 6. symbolic links at written paths ------------------------------------------------------


@pytest.mark.parametrize("link", ["out.parquet", "out.failures.parquet", "out.manifest.json"])
def test_a_symbolic_link_at_a_written_path_is_refused(
    link: str, tmp_path: Path, env: dict[str, str]
) -> None:
    write_csv(tmp_path / "in.csv")
    target = tmp_path / "elsewhere" / "target"
    target.parent.mkdir()
    target.write_bytes(b"the link's target")
    (tmp_path / link).symlink_to(target)
    job = write_job(tmp_path)
    code, text = validate(job)
    assert code == 2 and "symbolic link" in text, text
    before = tree(tmp_path)
    for flags in ((), ("--fresh",)):
        code, text = run(job, *flags)
        assert code == 2, text
        assert "symbolic link" in one_error(text)
        assert tree(tmp_path) == before
    assert (tmp_path / link).is_symlink() and target.read_bytes() == b"the link's target"


def test_a_linked_output_folder_is_followed(tmp_path: Path, env: dict[str, str]) -> None:
    write_csv(tmp_path / "in.csv")
    (tmp_path / "disk").mkdir()
    (tmp_path / "out").symlink_to(tmp_path / "disk", target_is_directory=True)
    code, text = run(write_job(tmp_path, output={"path": "out/result.parquet"}))
    assert code == 0, text
    assert pl.read_parquet(tmp_path / "disk" / "result.parquet").height == 3


def _old_digest(job: Any, produced_by: str, truncate: bool) -> str:
    """The fingerprint versions before the named parts wrote (their on-disk format)."""
    import hashlib
    import json

    t = job.task
    spec = {
        "produced_by": produced_by,
        "kind": t.kind,
        "model": t.model,
        "params": t.params,
        "input": t.input,
        "truncate": truncate,
        "langs": [t.source_lang_column, t.target_lang_column],
        "key": job.source.key,
        "keep": job.output.keep,
    }
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@pytest.mark.parametrize(
    ("stored_job", "digest_of", "refused"),
    [
        ("paths", BGE, None),
        ("paths", "emulator:other", f"emulator:other, this run's come from {BGE}"),
        ("someone", BGE, "job 'someone'"),
    ],
)
def test_outputs_of_older_versions_are_still_recognised(
    stored_job: str, digest_of: str, refused: str | None, tmp_path: Path
) -> None:
    write_csv(tmp_path / "in.csv")
    job = load_job(write_job(tmp_path))
    meta = {
        b"pipelines.fingerprint": _old_digest(job, digest_of, truncate=True).encode(),
        b"pipelines.job": stored_job.encode(),
        b"pipelines.produced_by": digest_of.encode(),
        b"pipelines.model": BGE.encode(),
    }
    table = pa.table({"_key": ["0"]}).replace_schema_metadata(meta)
    pq.write_table(table, job.output_path)
    store = OutputStore(job.output_path, fingerprint=fingerprint(job), meta={})
    if refused is None:
        store.open(fresh=False)  # resumed: no --fresh needed after an upgrade
        return
    with pytest.raises(OutputError) as info:
        store.open(fresh=False)
    assert refused in info.value.message and "--fresh" in info.value.message


@pytest.mark.parametrize("broken", ["missing column", "ragged first row"])
def test_fresh_deletes_nothing_when_the_input_is_refused(
    broken: str, tmp_path: Path, env: dict[str, str]
) -> None:
    write_csv(tmp_path / "in.csv")
    job = write_job(tmp_path)
    assert run(job)[0] == 0
    if broken == "missing column":
        job = write_job(tmp_path, task={"input": "body"})
    else:
        (tmp_path / "in.csv").write_text("id,text\n1,a,surplus\n2,b\n")
    before = tree(tmp_path)
    code, text = run(job, "--fresh")
    assert code == 2, text
    one_error(text)
    assert {k: v for k, v in tree(tmp_path).items() if k != "in.csv"} == {
        k: v for k, v in before.items() if k != "in.csv"
    }
