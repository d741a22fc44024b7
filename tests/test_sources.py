"""CSV and Parquet sources: streaming, projection, up-front checks and clear errors."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core.errors import SourceError
from pipelines.job.load import load_job
from pipelines.job.spec import Job
from pipelines.sources import KEY, Source, needed_columns, open_source
from pipelines.sources.parquet import ParquetSource


def make_job(
    tmp_path: Path,
    path: str,
    *,
    kind: str = "csv",
    key: str | None = None,
    keep: tuple[str, ...] = (),
    extra_source: str = "",
) -> Job:
    key_line = f"\n  key: {key}" if key else ""
    text = (
        f'name: t\nsource:\n  kind: {kind}\n  path: "{path}"{key_line}{extra_source}\n'
        'task:\n  kind: embed\n  model: "@cf/baai/bge-small-en-v1.5"\n  input: text\n'
        f"output:\n  path: out/result.parquet\n  keep: [{', '.join(keep)}]\n"
    )
    job_file = tmp_path / "job.yaml"
    job_file.write_text(text, encoding="utf-8")
    return load_job(job_file)


def collect(source: Source, columns: list[str], rows: int = 20_000) -> pl.DataFrame:
    return pl.concat(list(source.iter_batches(columns, rows)))


def write_csv(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_needed_columns_order(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", b"id,text,x\n1,a,b\n")
    job = make_job(tmp_path, "a.csv", key="id", keep=("x", "id"))
    assert needed_columns(job) == ["text", "id", "x"]


def test_parquet_streams_in_bounded_batches_with_projection(tmp_path: Path) -> None:
    n = 200_000
    table = pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "text": pa.array([f"row {i}" for i in range(n)]),
            "unused": pa.array([b"x" * 10] * n),
        }
    )
    pq.write_table(table, tmp_path / "big.parquet", row_group_size=30_000)
    job = make_job(tmp_path, "big.parquet", kind="parquet", key="id")
    source = open_source(job)
    assert isinstance(source, ParquetSource)
    assert source.count() == n
    assert source.columns() == ["id", "text", "unused"]
    sizes, total = [], 0
    for batch in source.iter_batches(["text"], batch_rows=20_000):
        assert batch.columns == ["text", KEY]
        assert batch.height <= 20_000
        assert batch.schema[KEY] == pl.Utf8
        sizes.append(batch.height)
        total += batch.height
    assert total == n
    assert sizes == [20_000] * 10
    assert source.duplicate_keys == 0


def test_csv_quotes_bom_nulls_and_text_types(tmp_path: Path) -> None:
    data = '\ufeffid,text,n\n1,"a, ""quoted""\nline",7\n2,,8\n3,plain,\n'.encode()
    write_csv(tmp_path / "in.csv", data)
    source = open_source(make_job(tmp_path, "in.csv", key="id", keep=("n",)))
    assert source.columns() == ["id", "text", "n"]
    assert source.count() == 3
    df = collect(source, ["id", "text", "n"])
    assert df["id"].to_list() == ["1", "2", "3"]
    assert df["text"].to_list() == ['a, "quoted"\nline', None, "plain"]
    assert df["n"].to_list() == ["7", "8", None]
    assert df[KEY].to_list() == ["1", "2", "3"]
    assert all(df.schema[c] == pl.Utf8 for c in df.columns)


def test_csv_batches_are_bounded(tmp_path: Path) -> None:
    body = "".join(f"{i},text {i}\n" for i in range(5_000))
    write_csv(tmp_path / "in.csv", ("id,text\n" + body).encode())
    source = open_source(make_job(tmp_path, "in.csv", key="id"))
    sizes = [b.height for b in source.iter_batches(["text"], batch_rows=700)]
    assert max(sizes) == 700
    assert sum(sizes) == 5_000 == source.count()


def test_csv_delimiter(tmp_path: Path) -> None:
    write_csv(tmp_path / "in.csv", b"id;text\n1;a,b\n")
    job = make_job(tmp_path, "in.csv", key="id", extra_source='\n  delimiter: ";"')
    assert collect(open_source(job), ["text"])["text"].to_list() == ["a,b"]


def test_ragged_row_names_the_record(tmp_path: Path) -> None:
    write_csv(tmp_path / "in.csv", b"id,text\n1,a\n2,b,extra\n3,c\n")
    # in the first block: found when the source is opened
    with pytest.raises(SourceError, match=r"record 3 \(the header is record 1\) has 3 fields"):
        open_source(make_job(tmp_path, "in.csv", key="id"))
    body = "".join(f"{i},text {i}\n" for i in range(4, 700_000))
    write_csv(tmp_path / "in.csv", ("id,text\n1,a\n3,c\n" + body + "x,b,extra\n").encode())
    source = open_source(make_job(tmp_path, "in.csv", key="id"))
    with pytest.raises(SourceError, match=r"record 700000 \(the header is record 1\) has 3"):
        source.count()
    with pytest.raises(SourceError, match="has 3 fields but the header has 2"):
        collect(source, ["text"])


def test_non_utf8_suggests_lossy(tmp_path: Path) -> None:
    write_csv(tmp_path / "in.csv", b"id,text\n1,caf\xe9\n")
    with pytest.raises(SourceError, match="utf8-lossy") as info:
        open_source(make_job(tmp_path, "in.csv", key="id"))
    assert "column 'text' is not valid UTF-8" in info.value.message
    job = make_job(tmp_path, "in.csv", key="id", extra_source="\n  encoding: utf8-lossy")
    assert collect(open_source(job), ["text"])["text"].to_list() == ["caf\ufffd"]


def test_missing_column_and_missing_file(tmp_path: Path) -> None:
    write_csv(tmp_path / "in.csv", b"id,body\n1,a\n")
    with pytest.raises(SourceError, match=r"no column 'text' \(named by task.input\)"):
        open_source(make_job(tmp_path, "in.csv"))
    write_csv(tmp_path / "in2.csv", b"id,text\n1,a\n")
    with pytest.raises(SourceError, match=r"no column 'nope' \(named by output.keep\)"):
        open_source(make_job(tmp_path, "in2.csv", keep=("nope",)))
    with pytest.raises(SourceError, match=r"'missing\.csv': no such file"):
        open_source(make_job(tmp_path, "missing.csv"))
    with pytest.raises(SourceError, match="matches no files"):
        open_source(make_job(tmp_path, "*.tsv"))
    write_csv(tmp_path / "empty.csv", b"")
    with pytest.raises(SourceError, match="the file is empty"):
        open_source(make_job(tmp_path, "empty.csv"))


def test_not_parquet(tmp_path: Path) -> None:
    write_csv(tmp_path / "x.parquet", b"id,text\n1,a\n")
    with pytest.raises(SourceError, match="not a readable Parquet file"):
        open_source(make_job(tmp_path, "x.parquet", kind="parquet"))


def test_non_text_input_column(tmp_path: Path) -> None:
    pq.write_table(pa.table({"text": [1.5, 2.5]}), tmp_path / "f.parquet")
    with pytest.raises(SourceError, match="column 'text' is double, not text"):
        open_source(make_job(tmp_path, "f.parquet", kind="parquet"))


@pytest.mark.parametrize("spec", ["parts", "parts/*.parquet", "parts/**/*.parquet"])
def test_folder_or_glob_of_parquet_files_reads_in_sorted_order(tmp_path: Path, spec: str) -> None:
    for i in (2, 0, 1):
        (tmp_path / "parts").mkdir(exist_ok=True)
        table = pa.table({"id": [i * 10, i * 10 + 1], "text": [f"f{i}a", f"f{i}b"]})
        pq.write_table(table, tmp_path / "parts" / f"part-{i}.parquet")
    (tmp_path / "parts" / "_SUCCESS").write_text("")
    source = open_source(make_job(tmp_path, spec, kind="parquet", key="id"))
    assert source.count() == 6
    df = collect(source, ["text"], rows=4)
    assert df["text"].to_list() == ["f0a", "f0b", "f1a", "f1b", "f2a", "f2b"]


def test_several_csv_files_and_a_bad_one(tmp_path: Path) -> None:
    write_csv(tmp_path / "d" / "a.csv", b"id,text\n1,x\n")
    write_csv(tmp_path / "d" / "b.csv", b"id,text\n2,y\n")
    source = open_source(make_job(tmp_path, "d", key="id"))
    assert collect(source, ["text"])["text"].to_list() == ["x", "y"]
    write_csv(tmp_path / "d" / "c.csv", b"id,other\n3,z\n")
    with pytest.raises(SourceError, match=r"c.csv: no column 'text'"):
        open_source(make_job(tmp_path, "d", key="id"))


def test_null_key_is_an_error_and_duplicate_keys_keep_the_first(tmp_path: Path) -> None:
    write_csv(tmp_path / "in.csv", b"id,text\n1,a\n2,b\n1,c\n")
    source = open_source(make_job(tmp_path, "in.csv", key="id"))
    df = collect(source, ["text"])
    assert df["text"].to_list() == ["a", "b"]
    assert source.duplicate_keys == 1
    write_csv(tmp_path / "in.csv", b"id,text\n1,a\n,b\n")
    with pytest.raises(SourceError, match="data row 2 has no value in the key column 'id'"):
        collect(open_source(make_job(tmp_path, "in.csv", key="id")), ["text"])


def test_unknown_requested_column(tmp_path: Path) -> None:
    write_csv(tmp_path / "in.csv", b"id,text\n1,a\n")
    source = open_source(make_job(tmp_path, "in.csv"))
    with pytest.raises(SourceError, match="no column 'nope'"):
        collect(source, ["nope"])
