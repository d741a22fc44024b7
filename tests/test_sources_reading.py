"""CSV reading under hostile input (issue 11): readers that never outlive their use, fields
bigger than a parse block, and errors that name the record.

The exit crash (rc 134, "terminate called without an active exception") came from pyarrow
releasing a reader on one of its own threads while the interpreter was shutting down: the
reader held a Python callback (the invalid-row handler) or a Python file object (the lossy
decoder), and dropping it there needs the GIL, which a finalizing interpreter no longer
hands out. The fix is structural, so the test is too: pyarrow is never handed a Python
object, and every reader is closed by the code that opened it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from pipelines.core.errors import SourceError
from pipelines.job.load import load_job
from pipelines.job.spec import Job
from pipelines.sources import KEY, open_source
from pipelines.sources import csv as csv_source


def make_job(tmp_path: Path, *, key: str | None = "id", lossy: bool = False) -> Job:
    lines = ["name: t", "source:", "  kind: csv", "  path: in.csv"]
    if key:
        lines.append(f"  key: {key}")
    if lossy:
        lines.append("  encoding: utf8-lossy")
    lines += [
        "task:",
        "  kind: embed",
        '  model: "@cf/baai/bge-small-en-v1.5"',
        "  input: text",
        "output:",
        "  path: out/result.parquet",
    ]
    (tmp_path / "job.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_job(tmp_path / "job.yaml")


class SpyReader:
    """A pyarrow CSV reader that records whether it was closed."""

    def __init__(self, inner: pacsv.CSVStreamingReader) -> None:
        self.inner = inner
        self.closed = False

    def __iter__(self) -> Any:
        return iter(self.inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def read_next_batch(self) -> pa.RecordBatch:
        return self.inner.read_next_batch()

    def close(self) -> None:
        self.closed = True
        self.inner.close()

    def __enter__(self) -> SpyReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def readers(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any, list[SpyReader]]]:
    """Every ``pyarrow.csv.open_csv`` call: (source, parse options, [the reader, if any])."""
    opened: list[tuple[Any, Any, list[SpyReader]]] = []
    real = pacsv.open_csv

    def spy(source: Any, **kwargs: Any) -> SpyReader:
        made: list[SpyReader] = []
        opened.append((source, kwargs.get("parse_options"), made))
        made.append(SpyReader(real(source, **kwargs)))  # opening parses: it may raise
        return made[0]

    monkeypatch.setattr(pacsv, "open_csv", spy)
    return opened


def _check_no_python_in_arrow(opened: list[tuple[Any, Any, list[SpyReader]]]) -> None:
    assert opened
    for source, parse_options, made in opened:
        # a Python file would be read, and released, on pyarrow's own threads
        native = isinstance(source, pa.NativeFile) and not isinstance(source, pa.PythonFile)
        assert isinstance(source, str) or native, source
        assert parse_options is None or parse_options.invalid_row_handler is None
        assert all(reader.closed for reader in made)


@pytest.mark.parametrize("lossy", [False, True], ids=["utf8", "utf8-lossy"])
def test_readers_hold_no_python_object_and_are_always_closed(
    tmp_path: Path, readers: list[tuple[Any, Any, list[SpyReader]]], lossy: bool
) -> None:
    body = "".join(f"{i},text {i}\n" for i in range(3_000))
    (tmp_path / "in.csv").write_bytes(("id,text\n" + body).encode())
    source = open_source(make_job(tmp_path, lossy=lossy))  # checks the first block
    assert source.count() == 3_000
    # the runner's sample: one batch, then the generator is dropped unfinished
    sample = next(iter(source.iter_batches(["text"], batch_rows=1)))
    assert sample["text"].to_list() == ["text 0"]
    del sample
    assert sum(b.height for b in source.iter_batches(["text"], batch_rows=500)) == 3_000
    _check_no_python_in_arrow(readers)


def test_error_paths_hold_no_python_object_either(
    tmp_path: Path, readers: list[tuple[Any, Any, list[SpyReader]]]
) -> None:
    (tmp_path / "in.csv").write_bytes(b"id,text\n1,a\n2,b,extra\n" + bytes(range(128, 256)) + b"\n")
    with pytest.raises(SourceError, match="record 3"):
        open_source(make_job(tmp_path))
    _check_no_python_in_arrow(readers)


def test_ragged_row_of_undecodable_bytes_names_the_record(tmp_path: Path) -> None:
    junk = bytes(range(128, 256)) * 2
    (tmp_path / "in.csv").write_bytes(b"doc_id,title,text\n1,a,hello\n" + junk + b"\n")
    (tmp_path / "job.yaml").write_text(
        "name: t\nsource: {kind: csv, path: in.csv, key: doc_id}\n"
        'task: {kind: embed, model: "@cf/baai/bge-small-en-v1.5", input: text}\n'
        "output: {path: out/r.parquet}\n"
    )
    with pytest.raises(SourceError) as info:
        open_source(load_job(tmp_path / "job.yaml")).count()
    message = info.value.message
    assert "record 3 (the header is record 1) has 1 field" in message
    assert "re-save the file as UTF-8" in message


def test_invalid_utf8_names_the_column_and_the_record(tmp_path: Path) -> None:
    rows = "".join(f"{i},fine {i}\n" for i in range(1, 5_000)).encode()
    (tmp_path / "in.csv").write_bytes(b"id,text\n" + rows + b"5000,caf\xe9\n")
    with pytest.raises(SourceError) as info:
        open_source(make_job(tmp_path)).count()
    assert "record 5001" in info.value.message
    assert "column 'text' is not valid UTF-8" in info.value.message
    assert "utf8-lossy" in info.value.message


def test_lossy_replaces_bad_bytes_in_every_column(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_bytes(b"id,text\n1\xff,caf\xe9 au lait\n2,ok\n")
    source = open_source(make_job(tmp_path, lossy=True))
    batch = next(iter(source.iter_batches(["id", "text"])))
    assert batch["text"].to_list() == ["caf\ufffd au lait", "ok"]
    assert batch[KEY].to_list() == ["1\ufffd", "2"]


def _big_field_csv(path: Path, before: int, field: str, after: int) -> list[str]:
    texts = [f"text {i}" for i in range(before)] + [field] + [f"text {i}" for i in range(after)]
    quoted = '"' + field.replace('"', '""') + '"'
    lines = [f"{i},{t if t is not field else quoted}" for i, t in enumerate(texts)]
    path.write_text("id,text\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return texts


def test_a_field_bigger_than_the_parse_block_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csv_source, "BLOCK_BYTES", 1 << 16)
    field = ('a "quoted" line, with commas\n' * 40_000)[:1_000_000]
    texts = _big_field_csv(tmp_path / "in.csv", 4_000, field, 4_000)
    source = open_source(make_job(tmp_path))
    assert source.count() == len(texts)
    got = [t for b in source.iter_batches(["text"], batch_rows=700) for t in b["text"]]
    assert got == texts  # every row once, in order, the big one whole


def test_a_field_over_the_limit_is_refused_naming_the_record_and_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csv_source, "BLOCK_BYTES", 1 << 16)
    monkeypatch.setattr(csv_source, "MAX_RECORD_BYTES", 1 << 19)
    # 2.9 times the limit: no parse block it may grow to can hold it
    _big_field_csv(tmp_path / "in.csv", 1_500, "x" * 1_500_000, 10)
    source = open_source(make_job(tmp_path))
    with pytest.raises(SourceError) as info:
        source.count()
    message = info.value.message
    assert "record 1502 (the header is record 1)" in message
    assert "0.5 MiB" in message  # the limit
    assert "straddl" not in message and "block size" not in message


@pytest.mark.slow
def test_a_twenty_megabyte_field_is_read_with_the_default_settings(tmp_path: Path) -> None:
    field = "word " * 4_000_000
    texts = _big_field_csv(tmp_path / "in.csv", 10, field, 10)
    source = open_source(make_job(tmp_path))
    assert source.count() == 21
    got = [t for b in source.iter_batches(["text"]) for t in b["text"]]
    assert got == texts
