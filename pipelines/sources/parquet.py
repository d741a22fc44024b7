"""Parquet input: one file or many, read row group by row group with column projection.

The files of one source are one table, so a column has one type across them. Types that
drift between files (int32 in one part, int64 in the next; string and large_string; an
all-null part) are widened to one type, decided from the footers before anything is read;
types that do not widen to one (int64 here, string there) are refused up front, naming the
file and the column. The key column is exempt: only its text is used (see
:mod:`pipelines.sources.keys`), so ``1`` and ``"1"`` are one key in any file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.errors import SourceError
from pipelines.job.spec import Job
from pipelines.sources.base import Source, text_columns
from pipelines.sources.keys import key_type_problem

SUFFIXES = (".parquet", ".pq")


def _is_textlike(dtype: Any) -> bool:
    types = pa.types
    if types.is_dictionary(dtype):
        return _is_textlike(dtype.value_type)
    return bool(
        types.is_string(dtype)
        or types.is_large_string(dtype)
        or types.is_string_view(dtype)
        or types.is_null(dtype)
        or types.is_integer(dtype)
    )


def _plain(dtype: pa.DataType) -> pa.DataType:
    return dtype.value_type if pa.types.is_dictionary(dtype) else dtype


def widened(found: Sequence[pa.DataType]) -> pa.DataType | None:
    """One type that holds every value of columns typed ``found``, or ``None``: integers
    become int64 (uint64 only with other unsigned), floats float64, strings and binaries
    their large kind, timestamps of one time zone the finest unit; a null type joins any."""
    kinds = {_plain(t) for t in found if not pa.types.is_null(t)}
    types = pa.types
    if len(kinds) <= 1:
        return next(iter(kinds), pa.null())
    if all(types.is_integer(t) for t in kinds):
        if pa.uint64() in kinds:
            return pa.uint64() if all(types.is_unsigned_integer(t) for t in kinds) else None
        return pa.int64()
    if all(types.is_floating(t) for t in kinds):
        return pa.float64()
    if all(types.is_string(t) or types.is_large_string(t) for t in kinds):
        return pa.large_string()
    if all(types.is_binary(t) or types.is_large_binary(t) for t in kinds):
        return pa.large_binary()
    if all(types.is_timestamp(t) for t in kinds) and len({t.tz for t in kinds}) == 1:
        units = ["s", "ms", "us", "ns"]
        finest = max((t.unit for t in kinds), key=units.index)
        return pa.timestamp(finest, next(iter(kinds)).tz)
    return None


class ParquetSource(Source):
    """Parquet files read as one table, in sorted file order."""

    def __init__(self, job: Job, files: list[Path]) -> None:
        super().__init__(job, files)
        self._rows = 0
        self._names: list[str] = []
        schemas: list[pa.Schema] = []
        for path in files:
            with self._open(path) as parquet:
                schema = parquet.schema_arrow
                rows = parquet.metadata.num_rows
            self._check(path, schema)
            schemas.append(schema)
            self._rows += rows
            if not self._names:
                self._names = list(schema.names)
        #: Columns whose type drifts between files, and the one type they are read as.
        self._casts = self._unify(schemas)

    @staticmethod
    def _open(path: Path) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(
                f"{path}: not a readable Parquet file ({exc}); check source.kind and the path"
            ) from None

    def _check(self, path: Path, schema: pa.Schema) -> None:
        self.check_columns(path, list(schema.names))
        for column in text_columns(self.job):
            dtype = schema.field(column).type
            if not _is_textlike(dtype):
                raise SourceError(
                    f"{path}: column {column!r} is {dtype}, not text; "
                    "point the job at a string column"
                )
        key = self.job.source.key
        problem = key_type_problem(schema.field(key).type) if key else None
        if problem:
            raise SourceError(f"{path}: the key column {key!r} (source.key) {problem}")

    def _unify(self, schemas: list[pa.Schema]) -> dict[str, pa.DataType]:
        """The type each drifting column is read as; raises on a drift that cannot widen."""
        exempt = {*text_columns(self.job)}  # read as text whatever their type
        if self.job.source.key not in self.job.output.keep:
            exempt.add(self.job.source.key or "")  # only its text is used
        casts: dict[str, pa.DataType] = {}
        for column in self.needed:
            if column in exempt:
                continue
            found = [s.field(column).type for s in schemas]
            if len(set(found)) == 1:
                continue
            common = widened(found)
            if common is None:
                self._refuse_drift(column, found)
            casts[column] = common
        return casts

    def _refuse_drift(self, column: str, found: list[pa.DataType]) -> None:
        first = found[0]
        at = next(i for i, t in enumerate(found) if widened([first, t]) is None)
        raise SourceError(
            f"{self.files[at]}: column {column!r} is {found[at]}, but {first} in "
            f"{self.files[0]}; every file of a source must give a column one type (or "
            "types that widen to one: integers, floats, strings); convert the column in "
            "one of them"
        )

    def columns(self) -> list[str]:
        """Columns of the first file."""
        return list(self._names)

    def count(self) -> int:
        """Rows in all files, from the footers (nothing is scanned)."""
        return self._rows

    def _conform(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        names = batch.schema.names
        if not any(name in self._casts for name in names):
            return batch
        arrays = [
            column.cast(self._casts[name]) if name in self._casts else column
            for name, column in zip(names, batch.columns, strict=True)
        ]
        return pa.RecordBatch.from_arrays(arrays, names=names)

    def _read(self, path: Path, columns: list[str], rows: int) -> Iterator[pl.DataFrame]:
        with self._open(path) as parquet:
            batches = parquet.iter_batches(batch_size=rows, columns=columns, use_threads=True)
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    return
                except (OSError, pa.ArrowException) as exc:
                    raise SourceError(f"{path}: the Parquet data is damaged: {exc}") from None
                frame = pl.from_arrow(self._conform(batch))
                assert isinstance(frame, pl.DataFrame)
                yield frame
