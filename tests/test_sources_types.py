"""Typed inputs (issue 11): a key column's value becomes the key *as text*, whatever its type,
and Parquet parts whose column types drift are unified or refused up front, never a
traceback or a hang."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipelines.cli import main
from pipelines.core.errors import SourceError
from pipelines.job.load import load_job
from pipelines.sources import KEY, open_source

BGE = "@cf/baai/bge-small-en-v1.5"


def write_job(tmp: Path, path: str = "parts", *, key: str | None = "id", keep: str = "") -> Path:
    key_line = f", key: {key}" if key else ""
    job = tmp / "job.yaml"
    job.write_text(
        f"name: typed\nsource: {{kind: parquet, path: {path}{key_line}}}\n"
        f'task: {{kind: embed, model: "{BGE}", input: text}}\n'
        f"output: {{path: out/result.parquet, keep: [{keep}]}}\n",
        encoding="utf-8",
    )
    return job


def write_part(tmp: Path, name: str, columns: dict[str, pa.Array]) -> Path:
    folder = tmp / "parts"
    folder.mkdir(exist_ok=True)
    path = folder / name
    pq.write_table(pa.table(columns), path)
    return path


def keys_of(job: Path, columns: tuple[str, ...] = ("text",)) -> pl.DataFrame:
    source = open_source(load_job(job))
    return pl.concat(list(source.iter_batches(list(columns), batch_rows=3)))


# -- keys as text --------------------------------------------------------------------------

UTC = dt.UTC
KEY_TEXTS: list[tuple[str, pa.Array, list[str]]] = [
    (
        "float64",
        pa.array([4.0, 0.1, 1e20, -2.5e-07], pa.float64()),
        ["4.0", "0.1", "1e+20", "-2.5e-07"],
    ),
    ("float32", pa.array([0.1, 4.0], pa.float32()), ["0.1", "4.0"]),
    ("int64", pa.array([4, -12], pa.int64()), ["4", "-12"]),
    ("uint8", pa.array([7, 255], pa.uint8()), ["7", "255"]),
    ("bool", pa.array([True, False]), ["true", "false"]),
    (
        "decimal",
        pa.array([decimal.Decimal("4.50"), decimal.Decimal("-0.01")], pa.decimal128(6, 2)),
        ["4.50", "-0.01"],
    ),
    ("date", pa.array([dt.date(2024, 1, 31), dt.date(1999, 12, 1)]), ["2024-01-31", "1999-12-01"]),
    (
        "timestamp",
        pa.array(
            [dt.datetime(2024, 1, 31, 12, 0), dt.datetime(2024, 1, 31, 12, 0, 0, 123456)],
            pa.timestamp("us"),
        ),
        ["2024-01-31T12:00:00", "2024-01-31T12:00:00.123456"],
    ),
    (
        "timestamp-ns",
        pa.array([1_706_702_400_000_000_001, 1_706_702_400_000_000_000], pa.timestamp("ns")),
        ["2024-01-31T12:00:00.000000001", "2024-01-31T12:00:00"],
    ),
    (
        "timestamp-utc",
        pa.array([dt.datetime(2024, 1, 31, 12, 0, tzinfo=UTC)], pa.timestamp("ms", tz="UTC")),
        ["2024-01-31T12:00:00+00:00"],
    ),
    ("time", pa.array([dt.time(1, 2, 3, 400), dt.time(23, 0)]), ["01:02:03.000400", "23:00:00"]),
    ("binary", pa.array([b"abc", "caf\u00e9".encode()], pa.binary()), ["abc", "caf\u00e9"]),
    ("large_string", pa.array(["a", "b"], pa.large_string()), ["a", "b"]),
    ("dictionary", pa.array(["x", "y"]).dictionary_encode(), ["x", "y"]),
]


@pytest.mark.parametrize(
    ("values", "expected"), [(v, e) for _, v, e in KEY_TEXTS], ids=[n for n, _, _ in KEY_TEXTS]
)
def test_a_key_column_value_becomes_its_text(
    tmp_path: Path, values: pa.Array, expected: list[str]
) -> None:
    texts = pa.array([f"text {i}" for i in range(len(values))])
    write_part(tmp_path, "a.parquet", {"id": values, "text": texts})
    frame = keys_of(write_job(tmp_path))
    assert frame[KEY].to_list() == expected


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        (pa.array([[1], [2]]), "list"),
        (pa.array([{"a": 1}, {"a": 2}]), "struct"),
        (pa.array([dt.timedelta(1), dt.timedelta(2)]), "duration"),
    ],
    ids=["list", "struct", "duration"],
)
def test_a_key_column_of_a_type_that_is_no_key_is_refused_up_front(
    tmp_path: Path, values: pa.Array, kind: str
) -> None:
    write_part(tmp_path, "a.parquet", {"id": values, "text": pa.array(["a", "b"])})
    with pytest.raises(SourceError) as info:
        open_source(load_job(write_job(tmp_path)))
    message = info.value.message
    assert "a.parquet" in message and "'id'" in message and kind in message
    assert "source.key" in message


def test_a_nan_key_is_no_value_like_a_null(tmp_path: Path) -> None:
    ids = pa.array([1.0, float("nan"), 3.0])
    write_part(tmp_path, "a.parquet", {"id": ids, "text": pa.array(["a", "b", "c"])})
    with pytest.raises(SourceError, match="data row 2 has no value in the key column 'id'"):
        keys_of(write_job(tmp_path))


def test_a_binary_key_that_is_not_utf8_is_refused_naming_the_row(tmp_path: Path) -> None:
    ids = pa.array([b"ok", b"\xff\xfe"], pa.binary())
    write_part(tmp_path, "a.parquet", {"id": ids, "text": pa.array(["a", "b"])})
    with pytest.raises(SourceError, match="data row 2: the key column 'id' is not UTF-8 text"):
        keys_of(write_job(tmp_path))


def test_float_keys_run_end_to_end_as_their_text(tmp_path: Path, env: dict[str, str]) -> None:
    ids = pa.array([4.0, 0.5, 12.0])
    write_part(tmp_path, "a.parquet", {"id": ids, "text": pa.array(["a", "b", "c"])})
    job = write_job(tmp_path, keep="id")
    result = CliRunner().invoke(main, ["run", "--no-progress", str(job)])
    assert result.exit_code == 0, result.output
    out = pl.read_parquet(tmp_path / "out/result.parquet").sort("id")
    assert out[KEY].to_list() == ["0.5", "4.0", "12.0"]
    assert out["id"].to_list() == [0.5, 4.0, 12.0]  # the kept column keeps its type


# -- types that drift between Parquet parts --------------------------------------------------


def test_kept_integers_of_different_widths_become_int64(tmp_path: Path) -> None:
    write_part(tmp_path, "a.parquet", {"id": pa.array([1, 2], pa.int32()), "text": ["a", "b"]})
    write_part(tmp_path, "b.parquet", {"id": pa.array([3, 4], pa.int64()), "text": ["c", "d"]})
    write_part(tmp_path, "c.parquet", {"id": pa.array([5], pa.uint16()), "text": ["e"]})
    frame = keys_of(write_job(tmp_path, keep="id"), ("text", "id"))
    assert frame.schema["id"] == pl.Int64
    assert frame["id"].to_list() == [1, 2, 3, 4, 5]
    assert frame[KEY].to_list() == ["1", "2", "3", "4", "5"]


def test_kept_strings_and_all_null_parts_unify(tmp_path: Path) -> None:
    write_part(tmp_path, "a.parquet", {"id": [1], "text": ["a"], "k": pa.array(["x"])})
    write_part(tmp_path, "b.parquet", {"id": [2], "text": ["b"], "k": pa.array([None], pa.null())})
    large = pa.array(["z"], pa.large_string())
    write_part(tmp_path, "c.parquet", {"id": [3], "text": ["c"], "k": large})
    frame = keys_of(write_job(tmp_path, keep="k"), ("text", "k"))
    assert frame.schema["k"] == pl.Utf8
    assert frame["k"].to_list() == ["x", None, "z"]


def test_kept_column_that_is_int_in_one_part_and_text_in_another_is_refused(
    tmp_path: Path,
) -> None:
    write_part(tmp_path, "a.parquet", {"id": [1], "text": ["a"], "n": pa.array([7], pa.int64())})
    write_part(tmp_path, "b.parquet", {"id": [2], "text": ["b"], "n": pa.array(["seven"])})
    with pytest.raises(SourceError) as info:
        open_source(load_job(write_job(tmp_path, keep="n")))
    message = info.value.message
    assert message.startswith(str(tmp_path / "parts/b.parquet"))
    assert "column 'n' is string" in message and "int64" in message and "a.parquet" in message


def test_a_key_column_that_drifts_gives_the_same_text_keys(tmp_path: Path) -> None:
    write_part(tmp_path, "a.parquet", {"id": pa.array([1, 2]), "text": ["a", "b"]})
    write_part(tmp_path, "b.parquet", {"id": pa.array(["3", "1"]), "text": ["c", "d"]})
    source = open_source(load_job(write_job(tmp_path)))
    frame = pl.concat(list(source.iter_batches(["text"], batch_rows=3)))
    assert frame[KEY].to_list() == ["1", "2", "3"]  # "1" in b.parquet repeats 1 of a.parquet
    assert source.duplicate_keys == 1


def _drifting(tmp: Path, rows: int) -> Path:
    for name, n in (("a.parquet", pa.array(range(rows))), ("b.parquet", pa.array(["x"] * rows))):
        ids = pa.array([f"{name}-{i}" for i in range(rows)])
        texts = pa.array([f"text {i}" for i in range(rows)])
        write_part(tmp, name, {"id": ids, "text": texts, "n": n})
    return write_job(tmp, keep="n")


@pytest.mark.parametrize("rows", [5, 30_000])
def test_drifting_parts_are_one_error_line_for_every_command(
    tmp_path: Path, env: dict[str, str], rows: int
) -> None:
    job = _drifting(tmp_path, rows)
    for command in (["validate"], ["plan"], ["run", "--no-progress"]):
        result = CliRunner().invoke(main, [*command, str(job)])
        assert result.exit_code == 2, (command, result.output)
        assert isinstance(result.exception, SystemExit | None), result.exception
        assert "Traceback" not in result.output
        said = result.stdout + result.stderr
        assert "column 'n' is string" in said, said
        if command != ["validate"]:  # validate reports on stdout, per job file
            errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1, result.stderr
    assert not (tmp_path / "out/result.parquet").exists()
