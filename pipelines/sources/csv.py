"""CSV input, streamed with pyarrow's incremental reader.

Every CSV value is read as text (``pl.Utf8``): inferring types from the first block of a
stream can fail half-way through a large file, and text is what the models take. Empty
fields are nulls. A UTF-8 byte order mark is skipped; quoted fields may contain the
delimiter, quotes (doubled) and newlines; ``.csv.gz`` files are decompressed on the fly.

pyarrow is handed nothing of Python's: the file by its path (pyarrow opens and
decompresses it), no invalid-row callback, no Python file object. Its readers run on its
own threads and can be released there, and releasing a Python object needs the GIL,
which an interpreter that is shutting down no longer hands out: the process aborts
("terminate called without an active exception"). Every reader is also closed by the code
that opened it, early exits included. When pyarrow refuses a file, a plain second reading
(:mod:`pipelines.sources.csv_records`) finds the record and says what is wrong with it; a
record bigger than the parse block is not wrong, and the file is read again with a block
that holds it (up to :data:`MAX_RECORD_BYTES`).
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Generator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from pipelines.core.errors import SourceError
from pipelines.job.spec import Job
from pipelines.sources import csv_records
from pipelines.sources.base import Source
from pipelines.sources.csv_records import Scan, find_problem, open_bytes

SUFFIXES = (".csv", ".csv.gz", ".tsv")
#: pyarrow's parse block (a record must fit in one; bigger records get a bigger block).
BLOCK_BYTES = 8 << 20
#: The largest record (one row, all its fields) a CSV source reads.
MAX_RECORD_BYTES = csv_records.MAX_RECORD_BYTES


def _binary(names: list[str]) -> bool:
    """Whether a header row is binary data rather than column names."""
    text = "".join(names)
    return "\ufffd" in text or "\x00" in text


def _lossy_text(column: pa.Array) -> pa.Array:
    """Bytes as UTF-8 text, each invalid sequence replaced by U+FFFD."""
    try:
        return column.cast(pa.string())  # validates: the common case, all valid
    except pa.ArrowInvalid:
        values = column.to_pylist()
        return pa.array([None if v is None else v.decode("utf-8", "replace") for v in values])


class CsvSource(Source):
    """CSV files read as one table, in sorted file order."""

    def __init__(self, job: Job, files: list[Path]) -> None:
        super().__init__(job, files)
        self._lossy = job.source.encoding == "utf8-lossy"
        self._count: int | None = None
        # per file, the parse block its biggest record needed (found once, kept)
        self._blocks: dict[Path, int] = {}
        self._headers = {path: self._header(path) for path in files}
        for path, names in self._headers.items():
            if set(self.needed) - set(names) and _binary(names):
                raise SourceError(
                    f"{path}: the first line is not a CSV header (it is not UTF-8 text); "
                    "check source.path and source.kind, or re-save the file as UTF-8"
                )
            self.check_columns(path, names)
            twice = sorted({c for c in self.needed if names.count(c) > 1})
            if twice:
                raise SourceError(f"{path}: the header names column {twice[0]!r} twice")
            # The first rows are parsed (and checked) here: early, cheap evidence.
            with contextlib.closing(self._read(path, self.needed, 1)) as rows:
                next(rows, None)

    def _header(self, path: Path) -> list[str]:
        # Decoding leniently here: bad bytes in the data are reported by the reader, with
        # the column they are in.
        try:
            with open_bytes(path) as raw:
                text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
                row = next(csv.reader(text, delimiter=self.job.source.delimiter), None)
        except (OSError, EOFError, csv.Error) as exc:
            raise SourceError(f"{path}: cannot read as CSV: {exc}") from None
        if not row:
            raise SourceError(f"{path}: the file is empty; a CSV source needs a header row")
        return row

    def columns(self) -> list[str]:
        """Columns of the first file's header."""
        return list(self._headers[self.files[0]])

    def count(self) -> int:
        """Rows in all files: an exact parse of one column (quoted newlines make a plain
        line count wrong), cached; it also finds ragged rows before any work is done."""
        if self._count is None:
            first = self.needed[:1] or self.columns()[:1]
            total = 0
            for path in self.files:
                total += sum(f.height for f in self._read(path, first, 1 << 30))
            self._count = total
        return self._count

    def _reader(self, path: Path, columns: list[str], block: int) -> pacsv.CSVStreamingReader:
        # lossy: read bytes, and decode them here (pyarrow would refuse invalid UTF-8)
        kind = pa.binary() if self._lossy else pa.string()
        return pacsv.open_csv(
            str(path),
            read_options=pacsv.ReadOptions(
                block_size=block,
                # a grown block is read serially: one big block in memory, not one a thread
                use_threads=block <= BLOCK_BYTES,
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=self.job.source.delimiter, newlines_in_values=True
            ),
            convert_options=pacsv.ConvertOptions(
                include_columns=columns,
                column_types=dict.fromkeys(columns, kind),
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )

    def _batches(
        self, path: Path, columns: list[str], block: int, skip: int
    ) -> Generator[pa.RecordBatch, None, None]:
        """The file's record batches after its first ``skip`` rows; the reader is closed
        however the caller stops."""
        with self._reader(path, columns, block) as reader:
            for batch in reader:
                if skip >= batch.num_rows:
                    skip -= batch.num_rows
                    continue
                if skip:
                    batch, skip = batch.slice(skip), 0
                if self._lossy:
                    arrays = [_lossy_text(column) for column in batch.columns]
                    batch = pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)
                yield batch

    def _read(
        self, path: Path, columns: list[str], rows: int
    ) -> Generator[pl.DataFrame, None, None]:
        block = self._blocks.get(path, BLOCK_BYTES)
        delivered = 0  # data rows of this file already yielded (skipped when read again)
        while True:
            try:
                with contextlib.closing(self._batches(path, columns, block, delivered)) as it:
                    for batch in it:
                        frame = pl.from_arrow(batch)
                        assert isinstance(frame, pl.DataFrame)
                        for start in range(0, frame.height, rows):
                            piece = frame.slice(start, rows)
                            yield piece
                            delivered += piece.height
                return
            except pa.ArrowInvalid as exc:
                block = self._blocks[path] = self._bigger_block(
                    path, columns, block, delivered, exc
                )
            except (OSError, EOFError) as exc:
                raise self._unreadable(path, exc) from None

    def _bigger_block(
        self, path: Path, columns: list[str], block: int, delivered: int, exc: Exception
    ) -> int:
        """The block to read ``path`` again with, or the located reason it cannot be read."""
        scan = Scan(
            path,
            self.job.source.delimiter,
            columns,
            self._lossy,
            delivered,
            block,
            limit=MAX_RECORD_BYTES,
        )
        try:
            found = find_problem(scan)
        except (OSError, EOFError) as err:
            raise self._unreadable(path, err) from None
        if found is not None and found.block is not None and found.block > block:
            return found.block
        if found is not None and found.error is not None:
            raise found.error from None
        raise SourceError(f"{path}: cannot parse as CSV: {exc}") from None

    def _unreadable(self, path: Path, exc: BaseException) -> SourceError:
        text = str(exc)
        if isinstance(exc, EOFError) or "compressed" in text.lower():
            text += "; the file is damaged or incomplete (a truncated .gz?): re-create it"
        return SourceError(f"{path}: cannot read: {text}")
