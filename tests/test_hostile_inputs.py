"""Hostile jobs and inputs (issue 8 §3), one table: every case runs the CLI (``validate``
and ``run`` against the emulator) and must end in exactly one of three ways:

- ``ERROR``: exit 2 and one ``error: ...`` line on stderr that says what to do;
- ``DEAD``: the run finishes with exit 1 and the bad rows in the failures file;
- ``OK``: the input is fine after all (a BOM, duplicate keys, zero rows), exit 0;

never a traceback, and never damage to an output that was there before (cases marked
``existing`` run on top of a good output: it must be byte-identical after an error, and
keep all its rows otherwise).
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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

BGE = "@cf/baai/bge-small-en-v1.5"
ERROR, DEAD, OK = "error", "dead-letter", "ok"


pytestmark = pytest.mark.emulator(daily_neurons=1_000_000, rpm_scale=10)


# -- building blocks -----------------------------------------------------------------------


def job_dict(**changes: Any) -> dict[str, Any]:
    """The good job, with ``section={key: value}`` changes (``None`` deletes a key)."""
    job: dict[str, Any] = {
        "name": "hostile",
        "source": {"kind": "csv", "path": "corpus.csv", "key": "doc_id"},
        "task": {"kind": "embed", "model": BGE, "input": "text"},
        "output": {"path": "out/result.parquet", "keep": ["title"]},
        "limits": {"concurrency": 4},
    }
    for section, value in changes.items():
        if isinstance(value, dict) and isinstance(job.get(section), dict):
            for key, v in value.items():
                if v is None:
                    job[section].pop(key, None)
                else:
                    job[section][key] = v
        elif value is None:
            job.pop(section, None)
        else:
            job[section] = value
    return job


def write_job(tmp: Path, **changes: Any) -> Path:
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump(job_dict(**changes), sort_keys=False))
    return path


def write_raw_job(tmp: Path, content: str | bytes) -> Path:
    path = tmp / "job.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


GOOD_ROWS = [
    (1, "first", "the river runs to the ocean"),
    (2, "second", "a quiet garden in winter"),
    (3, "third", "music in the city market"),
]


def write_csv(
    tmp: Path, rows: list[tuple[Any, ...]] | None = None, name: str = "corpus.csv"
) -> Path:
    path = tmp / name
    pl.DataFrame(rows or GOOD_ROWS, schema=["doc_id", "title", "text"], orient="row").with_columns(
        pl.col("doc_id").cast(pl.Utf8)
    ).write_csv(path)
    return path


def write_csv_bytes(tmp: Path, data: bytes, name: str = "corpus.csv") -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def good(tmp: Path) -> Path:
    write_csv(tmp)
    return write_job(tmp)


def wav(path: Path, seconds: float = 1.0) -> None:
    rate = 16_000
    t = np.arange(int(rate * seconds)) / rate
    sf.write(path, 0.3 * np.sin(2 * math.pi * 440 * t), rate)


def audio_job(tmp: Path) -> Path:
    return write_job(
        tmp,
        source={"kind": "audio", "path": "audio", "key": None},
        task={"kind": "transcribe", "model": "@cf/openai/whisper", "input": None},
        output={"keep": []},
    )


# -- the cases -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One hostile situation and what the CLI must make of it."""

    name: str
    setup: Callable[[Path], Path]  # builds the situation in a folder, returns the job file
    expect: str  # ERROR, DEAD or OK
    says: str = ""  # ERROR: the error line holds this (what to do); DEAD: failure kind
    validate: int | None = 2  # exit code of `pipelines validate` (None: not run)
    existing: bool = False  # run on top of a good output of the good job first
    failed: int = 0  # DEAD: rows in the failures file
    done: int | None = None  # DEAD / OK: rows in the output afterwards
    environ: tuple[tuple[str, str], ...] = ()  # environment variables for the runs
    process: bool = False  # run the CLI as a process of its own (slower, sees more)
    xfail: str = ""  # a known bug in a file this suite may not fix: why it fails


def _yaml_bomb(tmp: Path) -> Path:
    # "billion laughs": eight levels of nine aliases each, 43 million leaves if expanded
    lines = ['  a0: &a0 ["lol"]']
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    write_csv(tmp)
    text = yaml.safe_dump(job_dict(), sort_keys=False) + "x-anchors:\n" + "\n".join(lines)
    return write_raw_job(tmp, text + "\n")


def _symlink_loop(tmp: Path) -> Path:
    (tmp / "loop_a").symlink_to(tmp / "loop_b")
    (tmp / "loop_b").symlink_to(tmp / "loop_a")
    return write_job(tmp, source={"path": "loop_a"})


def _dir_symlink_loop(tmp: Path) -> Path:
    data = tmp / "data"
    data.mkdir()
    write_csv(data, name="part.csv")
    (data / "again").symlink_to(data)  # a folder that contains itself
    return write_job(tmp, source={"path": "data"})


def _fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "corpus.csv")
    return write_job(tmp)


def _binary_garbage(tmp: Path) -> Path:
    rng = np.random.default_rng(8)
    write_csv_bytes(tmp, rng.integers(0, 256, 64_000, dtype=np.uint8).tobytes())
    return write_job(tmp)


def _garbage_rows(tmp: Path) -> Path:
    # a good header, then a row of raw bytes that are not UTF-8 (and no valid record)
    rng = np.random.default_rng(9)
    junk = rng.integers(128, 256, 300, dtype=np.uint8).tobytes()
    write_csv_bytes(tmp, b"doc_id,title,text\n1,a,hello there\n" + junk + b"\n")
    return write_job(tmp)


def _mixed_encodings(tmp: Path) -> Path:
    data = "doc_id,title,text\n1,a,café au lait\n".encode() + "2,b,crème brûlée\n".encode("latin-1")
    write_csv_bytes(tmp, data)
    return write_job(tmp)


def _mixed_encodings_lossy(tmp: Path) -> Path:
    _mixed_encodings(tmp)
    return write_job(tmp, source={"encoding": "utf8-lossy"})


def _bom(tmp: Path) -> Path:
    data = b"\xef\xbb\xbf" + "doc_id,title,text\n1,a,héllo\n2,b,wörld\n".encode()
    write_csv_bytes(tmp, data)
    return write_job(tmp)


def _nulls(tmp: Path) -> Path:
    write_csv_bytes(tmp, b'doc_id,title,text\n1,a,fine text\n2,b,\n3,,""\n4,d,   \n5,e,ok\n')
    return write_job(tmp)


def _nulls_appended(tmp: Path) -> Path:
    # rows 1-3 as they were (a row whose text changed would be processed again), then a
    # blank one and a good one
    write_csv(tmp, [*GOOD_ROWS, (4, "d", "   "), (5, "e", "ok")])
    return write_job(tmp)


def _huge_string(tmp: Path) -> Path:
    big = "word " * 200_000  # 1 MB of text in one field
    write_csv(tmp, [(1, "a", "short text"), (2, "b", big), (3, "c", "another text")])
    return write_job(tmp)


def _huge_string_truncated(tmp: Path) -> Path:
    _huge_string(tmp)
    return write_job(tmp, task={"truncate": True})


def _ragged(tmp: Path) -> Path:
    write_csv_bytes(tmp, b"doc_id,title,text\n1,a,hello\n2,b,world,extra\n3,c\n")
    return write_job(tmp)


def _zero_rows(tmp: Path) -> Path:
    write_csv_bytes(tmp, b"doc_id,title,text\n")
    return write_job(tmp)


def _empty_csv(tmp: Path) -> Path:
    write_csv_bytes(tmp, b"")
    return write_job(tmp)


def _duplicate_keys(tmp: Path) -> Path:
    write_csv(tmp, [(1, "a", "one"), (1, "b", "one again"), (2, "c", "two"), (2, "d", "x")])
    return write_job(tmp)


def _null_key(tmp: Path) -> Path:
    write_csv_bytes(tmp, b"doc_id,title,text\n1,a,hello\n,b,no key here\n")
    return write_job(tmp)


def _parquet_wrong_type(tmp: Path) -> Path:
    pq.write_table(
        pa.table({"doc_id": ["1", "2"], "title": ["a", "b"], "text": [1.5, 2.5]}),
        tmp / "corpus.parquet",
    )
    return write_job(tmp, source={"kind": "parquet", "path": "corpus.parquet"})


def _parquet_nested_text(tmp: Path) -> Path:
    pq.write_table(
        pa.table({"doc_id": ["1"], "title": ["a"], "text": [["not", "a", "string"]]}),
        tmp / "corpus.parquet",
    )
    return write_job(tmp, source={"kind": "parquet", "path": "corpus.parquet"})


def _parquet_truncated(tmp: Path) -> Path:
    pq.write_table(
        pa.table({"doc_id": ["1", "2"], "title": ["a", "b"], "text": ["x", "y"]}),
        tmp / "corpus.parquet",
    )
    data = (tmp / "corpus.parquet").read_bytes()
    (tmp / "corpus.parquet").write_bytes(data[: len(data) // 2])
    return write_job(tmp, source={"kind": "parquet", "path": "corpus.parquet"})


def _csv_as_parquet(tmp: Path) -> Path:
    write_csv(tmp, name="corpus.parquet")
    return write_job(tmp, source={"kind": "parquet", "path": "corpus.parquet"})


def _gzip_truncated(tmp: Path) -> Path:
    raw = gzip.compress(b"doc_id,title,text\n" + b"1,a,hello world\n" * 5_000)
    write_csv_bytes(tmp, raw[: len(raw) // 2], name="corpus.csv.gz")
    return write_job(tmp, source={"path": "corpus.csv.gz"})


def _corrupt_audio(tmp: Path) -> Path:
    folder = tmp / "audio"
    folder.mkdir()
    wav(folder / "good.wav")
    (folder / "broken.mp3").write_bytes(b"ID3 this is not audio at all" * 10)
    (folder / "empty.wav").write_bytes(b"")
    data = (folder / "good.wav").read_bytes()
    (folder / "truncated.flac").write_bytes(b"fLaC" + data[4:60])
    return audio_job(tmp)


def _output_is_input(tmp: Path) -> Path:
    write_csv(tmp)
    return write_job(tmp, output={"path": "corpus.csv"})


def _output_parent_is_file(tmp: Path) -> Path:
    write_csv(tmp)
    (tmp / "out").write_text("I am a file, not a folder\n")
    return write_job(tmp)


def _output_in_proc(tmp: Path) -> Path:
    write_csv(tmp)
    return write_job(tmp, output={"path": "/proc/pipelines-hostile/result.parquet"})


def _output_is_folder(tmp: Path) -> Path:
    write_csv(tmp)
    (tmp / "out/result.parquet").mkdir(parents=True)
    return write_job(tmp)


def _output_foreign(tmp: Path) -> Path:
    write_csv(tmp)
    (tmp / "out").mkdir()
    pq.write_table(pa.table({"precious": [1, 2, 3]}), tmp / "out/result.parquet")
    return write_job(tmp)


def _output_not_parquet(tmp: Path) -> Path:
    write_csv(tmp)
    (tmp / "out").mkdir()
    (tmp / "out/result.parquet").write_text("my thesis, do not overwrite\n")
    return write_job(tmp)


def _output_other_model(tmp: Path) -> Path:
    # the good output exists; the job now asks for another model into the same file
    return write_job(tmp, task={"model": "@cf/baai/bge-base-en-v1.5"})


def _output_read_only(tmp: Path) -> Path:
    write_csv(tmp, [*GOOD_ROWS, (4, "fourth", "a new row to write")])
    make_read_only(tmp / "out")
    return write_job(tmp)


def _garbage_appended(tmp: Path) -> Path:
    # the good output exists; the input gains a row of garbage bytes
    with (tmp / "corpus.csv").open("ab") as fh:
        fh.write(b"4,d,\xff\xfe\x00\x01 garbage\n")
    return write_job(tmp)


def _null_key_appended(tmp: Path) -> Path:
    with (tmp / "corpus.csv").open("ab") as fh:
        fh.write(b",d,a row without its key\n")
    return write_job(tmp)


def _duplicate_header(tmp: Path) -> Path:
    write_csv_bytes(tmp, b"doc_id,text,title,text\n1,a,b,c\n")
    return write_job(tmp)


def _parquet_empty_strings(tmp: Path) -> Path:
    pq.write_table(
        pa.table({"doc_id": ["1", "2", "3"], "title": ["a", "b", "c"], "text": ["", "ok", ""]}),
        tmp / "corpus.parquet",
    )
    return write_job(tmp, source={"kind": "parquet", "path": "corpus.parquet"})


def _parquet_parts_disagree(tmp: Path) -> Path:
    parts = tmp / "parts"
    parts.mkdir()
    pq.write_table(
        pa.table({"doc_id": ["1"], "title": ["a"], "text": ["fine"]}), parts / "a.parquet"
    )
    pq.write_table(pa.table({"doc_id": ["2"], "title": ["b"]}), parts / "b.parquet")
    return write_job(tmp, source={"kind": "parquet", "path": "parts/*.parquet"})


def _strange_text(tmp: Path) -> Path:
    rows = [
        (1, "a", "nul \x00 bell \x07 escape \x1b[31m red"),
        (2, "b", "emoji 🦀🔥 and zero\u200bwidth and rtl \u202eabc"),
        (3, "c", 'line one\nline two, with "quotes" and, commas'),
        (4, "d", "\ud7ff\ue000\ufffd" * 50),
    ]
    write_csv(tmp, rows)
    return write_job(tmp)


def _bad_languages(tmp: Path) -> Path:
    write_csv(tmp)
    with (tmp / "corpus.csv").open("r+") as fh:
        lines = fh.read().splitlines()
        fh.seek(0)
        langs = ["lang", "fr", "klingon", "xx-YY"]
        fh.write("\n".join(f"{line},{lang}" for line, lang in zip(lines, langs, strict=True)))
        fh.write("\n")
    return write_job(
        tmp,
        task={"kind": "translate", "model": "@cf/meta/m2m100-1.2b", "target_lang_column": "lang"},
    )


def _silent_audio(tmp: Path) -> Path:
    folder = tmp / "audio"
    folder.mkdir()
    wav(folder / "good.wav")
    sf.write(folder / "zero.wav", np.zeros(0), 16_000)
    return audio_job(tmp)


def _ragged_appended(tmp: Path) -> Path:
    with (tmp / "corpus.csv").open("ab") as fh:
        fh.write(b"4,d,too,many,fields\n")
    return write_job(tmp)


CASES = [
    # -- the job file ---------------------------------------------------------------------
    Case(
        "broken-yaml",
        lambda t: write_raw_job(t, "name: x\nsource: {kind: csv\n"),
        ERROR,
        "invalid YAML",
    ),
    Case(
        "tab-indented-yaml",
        lambda t: write_raw_job(t, "name: x\nsource:\n\tkind: csv\n"),
        ERROR,
        "invalid YAML",
    ),
    Case(
        "yaml-list-not-mapping",
        lambda t: write_raw_job(t, "- name: x\n- task: y\n"),
        ERROR,
        "mapping",
    ),
    Case("empty-job-file", lambda t: write_raw_job(t, ""), ERROR, "empty"),
    Case("comments-only-job-file", lambda t: write_raw_job(t, "# nothing\n\n"), ERROR, "empty"),
    Case(
        "non-utf8-job-file",
        lambda t: write_raw_job(t, "name: caf\xe9\n".encode("latin-1")),
        ERROR,
        "UTF-8",
    ),
    Case(
        "binary-job-file",
        lambda t: write_raw_job(t, bytes(range(256)) * 4),
        ERROR,
        "not UTF-8",
    ),
    Case(
        "job-file-is-a-directory",
        lambda t: (t / "job.yaml").mkdir() or t / "job.yaml",
        ERROR,
        "no job files",
    ),
    Case("job-file-missing", lambda t: t / "nope.yaml", ERROR, "no such job file"),
    Case("yaml-bomb", _yaml_bomb, ERROR, "remove the aliases", process=True),
    Case(
        "wrong-type",
        lambda t: write_job(t, limits={"concurrency": "lots"}),
        ERROR,
        "limits.concurrency",
    ),
    Case("unknown-key", lambda t: write_job(t, sauce={"kind": "csv"}), ERROR, "did you mean"),
    Case("unknown-nested-key", lambda t: write_job(t, task={"modle": BGE}), ERROR, "task.modle"),
    Case("missing-section", lambda t: write_job(t, task=None), ERROR, "task"),
    Case(
        "huge-number",
        lambda t: write_job(t, limits={"batch_size": 10**40}),
        ERROR,
        "limits.batch_size",
    ),
    Case(
        "negative-concurrency",
        lambda t: write_job(t, limits={"concurrency": -4}),
        ERROR,
        "limits.concurrency",
    ),
    Case(
        "zero-timeout", lambda t: write_job(t, limits={"timeout_s": 0}), ERROR, "limits.timeout_s"
    ),
    Case(
        "nan-timeout",
        lambda t: write_job(t, limits={"timeout_s": float("nan")}),
        ERROR,
        "limits.timeout_s",
    ),
    Case(
        "unknown-model",
        lambda t: write_job(t, task={"model": "@cf/nope/model"}),
        ERROR,
        "pipelines models",
    ),
    Case(
        "token-in-job-file",
        lambda t: write_job(t, token="cf-secret-123"),
        ERROR,
        "CLOUDFLARE_API_TOKEN",
    ),
    Case("bad-name", lambda t: write_job(t, name="../../etc/passwd"), ERROR, "name"),
    Case(
        "nul-in-output-path",
        lambda t: good(t) and write_job(t, output={"path": "o\0.pq"}),
        ERROR,
        "NUL",
    ),
    Case("nul-in-source-path", lambda t: write_job(t, source={"path": "a\0b.csv"}), ERROR, "NUL"),
    Case(
        "zero-batch-size",
        lambda t: write_job(t, limits={"batch_size": 0}),
        ERROR,
        "limits.batch_size",
    ),
    Case(
        "long-delimiter",
        lambda t: write_job(t, source={"delimiter": ";;"}),
        ERROR,
        "source.delimiter",
    ),
    Case(
        "params-is-a-list",
        lambda t: write_job(t, task={"params": ["pooling"]}),
        ERROR,
        "task.params",
    ),
    Case(
        "base-url-not-http", lambda t: write_job(t, base_url="ftp://example.com"), ERROR, "base_url"
    ),
    Case("base-url-bad-ipv6", lambda t: write_job(t, base_url="http://[::1/v4"), ERROR, "base_url"),
    Case(
        "base-url-bad-port",
        lambda t: write_job(t, base_url="http://127.0.0.1:99999/"),
        ERROR,
        "base_url",
    ),
    Case(
        "base-url-space", lambda t: write_job(t, base_url="http://exa mple.com/"), ERROR, "base_url"
    ),
    Case(
        "env-base-url-bad-ipv6",
        good,
        ERROR,
        "CLOUDFLARE_API_BASE_URL",
        validate=0,
        environ=(("CLOUDFLARE_API_BASE_URL", "http://[::1/client/v4"),),
    ),
    Case(
        "keep-missing-column",
        lambda t: good(t) and write_job(t, output={"keep": ["nope"]}),
        ERROR,
        "output.keep",
    ),
    # -- the source ------------------------------------------------------------------------
    Case(
        "source-missing",
        lambda t: write_job(t, source={"path": "nowhere.csv"}),
        ERROR,
        "no such file",
    ),
    Case(
        "glob-matches-nothing",
        lambda t: write_job(t, source={"path": "parts/*.csv"}),
        ERROR,
        "matches no files",
    ),
    Case("symlink-loop", _symlink_loop, ERROR, "loop"),
    Case("folder-containing-itself", _dir_symlink_loop, OK, validate=0, done=3),
    Case("fifo-as-source", _fifo, ERROR, "not a regular file", process=True),
    Case(
        "missing-column",
        lambda t: good(t) and write_job(t, task={"input": "body"}),
        ERROR,
        "no column 'body'",
    ),
    Case(
        "missing-key-column",
        lambda t: good(t) and write_job(t, source={"key": "id"}),
        ERROR,
        "no column 'id'",
    ),
    Case("binary-garbage-csv", _binary_garbage, ERROR, "not a CSV header"),
    Case(
        "garbage-bytes-in-rows",
        _garbage_rows,
        ERROR,
        "re-save the file as UTF-8",
        process=True,
    ),
    Case("mixed-encodings", _mixed_encodings, ERROR, "utf8-lossy"),
    Case("mixed-encodings-lossy", _mixed_encodings_lossy, OK, validate=0, done=2),
    Case("bom", _bom, OK, validate=0, done=2),
    Case("ragged-rows", _ragged, ERROR, "record 3"),
    Case("zero-rows", _zero_rows, OK, validate=0, done=0),
    Case("empty-csv-file", _empty_csv, ERROR, "header"),
    # never silent: the first row of a key is processed, the repeats are recorded
    Case("duplicate-keys", _duplicate_keys, DEAD, "DuplicateKey", validate=0, failed=2, done=2),
    # validate counts rows but does not read keys: only the run finds the missing one
    Case(
        "null-key",
        _null_key,
        ERROR,
        "source.key",
        validate=0,
    ),
    Case("nulls-and-empty-strings", _nulls, DEAD, "EmptyInput", validate=0, failed=3, done=2),
    Case("one-megabyte-string", _huge_string, DEAD, "InputTooLong", validate=0, failed=1, done=2),
    Case("one-megabyte-string-truncated", _huge_string_truncated, OK, validate=0, done=3),
    Case("parquet-float-text-column", _parquet_wrong_type, ERROR, "not text"),
    Case("parquet-list-text-column", _parquet_nested_text, ERROR, "not text"),
    Case("parquet-truncated", _parquet_truncated, ERROR, "corpus.parquet"),
    Case("csv-named-parquet", _csv_as_parquet, ERROR, "source.kind"),
    Case("gzip-truncated", _gzip_truncated, ERROR, "re-create"),
    Case("corrupt-audio", _corrupt_audio, DEAD, "UnreadableAudio", validate=0, failed=3, done=1),
    Case("duplicate-header", _duplicate_header, ERROR, "twice"),
    Case(
        "parquet-empty-strings",
        _parquet_empty_strings,
        DEAD,
        "EmptyInput",
        validate=0,
        failed=2,
        done=1,
    ),
    Case("parquet-parts-disagree", _parquet_parts_disagree, ERROR, "no column 'text'"),
    Case("control-chars-emoji-newlines", _strange_text, OK, validate=0, done=4),
    Case(
        "unknown-row-languages", _bad_languages, DEAD, "InvalidOption", validate=0, failed=2, done=1
    ),
    Case("silent-audio", _silent_audio, DEAD, "UnreadableAudio", validate=0, failed=1, done=1),
    # -- the output -----------------------------------------------------------------------
    Case("output-is-the-input", _output_is_input, ERROR, "write elsewhere"),
    Case("output-parent-is-a-file", _output_parent_is_file, ERROR, "output.path", validate=0),
    Case("output-in-proc", _output_in_proc, ERROR, "output.path", validate=0),
    Case(
        "output-name-too-long",
        lambda t: good(t) and write_job(t, output={"path": "x" * 300 + ".parquet"}),
        ERROR,
        "bytes long",
    ),
    Case("output-is-a-folder", _output_is_folder, ERROR, "folder", validate=0),
    Case("output-not-by-pipelines", _output_foreign, ERROR, "move it away", validate=0),
    Case("output-not-parquet", _output_not_parquet, ERROR, "move it away", validate=0),
    Case("output-other-model", _output_other_model, ERROR, "--fresh", validate=0, existing=True),
    Case("output-folder-read-only", _output_read_only, ERROR, "out", validate=0, existing=True),
    Case("garbage-row-on-existing", _garbage_appended, ERROR, "utf8-lossy", existing=True),
    Case("ragged-row-on-existing", _ragged_appended, ERROR, "record 5", existing=True),
    Case(
        "null-key-on-existing", _null_key_appended, ERROR, "source.key", validate=0, existing=True
    ),
    # rows 1-3 are done already; of the new ones, 4 is blank and 5 is fine
    Case(
        "nulls-on-existing",
        _nulls_appended,
        DEAD,
        "EmptyInput",
        validate=0,
        existing=True,
        failed=1,
        done=4,
    ),
]


# -- read-only folders (also as root) ------------------------------------------------------

_UNLOCK: list[Callable[[], None]] = []


def make_read_only(folder: Path) -> None:
    """Make ``folder`` unwritable for this process; as root ``chmod`` is ignored, so the
    folder is made immutable with ``chattr +i`` (skips when neither works here)."""
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o500)
        _UNLOCK.append(lambda: folder.chmod(mode))
        return
    chattr = shutil.which("chattr")
    proc = subprocess.run(
        [chattr or "chattr", "+i", str(folder)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.skip(f"root, and chattr +i is refused here: {proc.stderr.strip()}")
    _UNLOCK.append(lambda: subprocess.run([chattr or "chattr", "-i", str(folder)], check=False))


@pytest.fixture(autouse=True)
def _unlock() -> Iterator[None]:
    yield
    while _UNLOCK:
        _UNLOCK.pop()()


# -- the test ------------------------------------------------------------------------------


def invoke(*args: str, process: bool = False) -> tuple[int, str, str]:
    """The CLI in this process, or (``process``) as its own process, which also shows what
    only a real process prints: interpreter warnings, aborts, hangs (bounded here)."""
    if process:
        proc = subprocess.run(
            [sys.executable, "-m", "pipelines", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        for noise in ("Traceback", "Exception ignored", "terminate called"):
            assert noise not in proc.stderr, proc.stderr
        return proc.returncode, proc.stdout, proc.stderr
    result = CliRunner().invoke(main, list(args))
    if not isinstance(result.exception, SystemExit | None):
        raise AssertionError(f"uncaught {result.exception!r}") from result.exception
    return result.exit_code, result.stdout, result.stderr


def snapshot(folder: Path) -> dict[str, bytes]:
    if not folder.is_dir():
        return {}
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.iterdir()
        if p.is_file() and p.suffix == ".parquet"
    }


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            c, id=c.name, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else []
        )
        for c in CASES
    ],
)
def test_hostile(
    case: Case, tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    before: dict[str, bytes] = {}
    old_keys: set[str] = set()
    if case.existing:
        code, out, err = invoke("run", "--no-progress", str(good(tmp_path)))
        assert code == 0, out + err
        before = snapshot(tmp_path / "out")
        old_keys = set(pl.read_parquet(tmp_path / "out/result.parquet")["_key"])
    job = case.setup(tmp_path)
    for name, value in case.environ:
        monkeypatch.setenv(name, value)
    if not before:
        before = snapshot(tmp_path / "out")

    if case.validate is not None:
        code, out, err = invoke("validate", str(job), process=case.process)
        assert "Traceback" not in out + err
        assert code == case.validate, out + err

    code, out, err = invoke("run", "--no-progress", str(job), process=case.process)
    assert "Traceback" not in out + err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    if case.expect == ERROR:
        assert code == 2, out + err
        assert len(errors) == 1, err
        assert case.says.lower() in err.lower(), err
        assert snapshot(tmp_path / "out") == before  # untouched, byte for byte
        return
    assert errors == [], err
    output = tmp_path / "out/result.parquet"
    failures = tmp_path / "out/result.failures.parquet"
    if case.expect == DEAD:
        assert code == 1, out + err
        failed = pl.read_parquet(failures)
        assert failed.height == case.failed, failed
        assert case.says in set(failed["error"]), failed
        assert "rows failed" in err
    else:
        assert code == 0, out + err
        assert not failures.exists() or pl.read_parquet(failures).height == 0
    frame = pl.read_parquet(output)
    assert frame["_key"].n_unique() == frame.height
    if case.done is not None:
        assert frame.height == case.done, frame
    assert old_keys <= set(frame["_key"])  # what was done before is still there
