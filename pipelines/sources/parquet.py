"""Parquet input: one file or many, read row group by row group with column projection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.errors import SourceError
from pipelines.job.spec import Job
from pipelines.sources.base import Source, text_columns

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


class ParquetSource(Source):
    """Parquet files read as one table, in sorted file order."""

    def __init__(self, job: Job, files: list[Path]) -> None:
        super().__init__(job, files)
        self._rows = 0
        self._names: list[str] = []
        for path in files:
            meta = self._open(path)
            schema = meta.schema_arrow
            names = list(schema.names)
            self.check_columns(path, names)
            for column in text_columns(job):
                dtype = schema.field(column).type
                if not _is_textlike(dtype):
                    raise SourceError(
                        f"{path}: column {column!r} is {dtype}, not text; "
                        "point the job at a string column"
                    )
            self._rows += meta.metadata.num_rows
            if not self._names:
                self._names = names

    @staticmethod
    def _open(path: Path) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(
                f"{path}: not a readable Parquet file ({exc}); check source.kind and the path"
            ) from None

    def columns(self) -> list[str]:
        """Columns of the first file."""
        return list(self._names)

    def count(self) -> int:
        """Rows in all files, from the footers (nothing is scanned)."""
        return self._rows

    def _read(self, path: Path, columns: list[str], rows: int) -> Iterator[pl.DataFrame]:
        parquet = self._open(path)
        batches = parquet.iter_batches(batch_size=rows, columns=columns, use_threads=True)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (OSError, pa.ArrowException) as exc:
                raise SourceError(f"{path}: the Parquet data is damaged: {exc}") from None
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            yield frame
