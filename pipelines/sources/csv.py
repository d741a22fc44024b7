"""CSV input, streamed with pyarrow's incremental reader.

Every CSV value is read as text (``pl.Utf8``): inferring types from the first block of a
stream can fail half-way through a large file, and text is what the models take. Empty
fields are nulls. A UTF-8 byte order mark is skipped; quoted fields may contain the
delimiter, quotes (doubled) and newlines; ``.csv.gz`` files are decompressed on the fly.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import gzip
import io
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from pipelines.core.errors import SourceError
from pipelines.job.spec import Job
from pipelines.sources.base import Source

SUFFIXES = (".csv", ".csv.gz", ".tsv")
_BLOCK_BYTES = 8 << 20


class _LossyUtf8(io.RawIOBase):
    """A byte stream re-encoded as valid UTF-8, bad bytes replaced by U+FFFD."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while len(self._pending) < len(view):
            chunk = self._raw.read(1 << 20)
            self._pending += self._decoder.decode(chunk, final=not chunk).encode("utf-8")
            if not chunk:
                break
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


_HANDLER_NAME = "on_invalid"
_WRONG_FIELDS = re.compile(r"Expected (\d+) columns, got (\d+)")


@contextlib.contextmanager
def _quiet_undecodable_rows(seen: list[bool]) -> Iterator[None]:
    """Keep pyarrow from printing a traceback for a bad row that is not UTF-8 either.

    pyarrow decodes a bad row's text before it calls the ``invalid_row_handler``; when that
    fails it prints "Exception ignored ... Traceback" to stderr and raises ``ArrowInvalid``
    (which is reported properly). While reading, that one message is swallowed (and noted
    in ``seen``); everything else goes to the hook that was there before.
    """
    previous = sys.unraisablehook

    def hook(info: Any) -> None:
        func = getattr(info.object, "__name__", "")
        if func == _HANDLER_NAME and isinstance(info.exc_value, UnicodeDecodeError):
            seen.append(True)
            return
        previous(info)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        if sys.unraisablehook is hook:
            sys.unraisablehook = previous


def _binary(names: list[str]) -> bool:
    """Whether a header row is binary data rather than column names."""
    text = "".join(names)
    return "\ufffd" in text or "\x00" in text


def _open_bytes(path: Path) -> IO[bytes]:
    if path.name.lower().endswith(".gz"):
        return cast(IO[bytes], gzip.GzipFile(path, "rb"))
    return open(path, "rb")


class CsvSource(Source):
    """CSV files read as one table, in sorted file order."""

    def __init__(self, job: Job, files: list[Path]) -> None:
        super().__init__(job, files)
        self._lossy = job.source.encoding == "utf8-lossy"
        self._count: int | None = None
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
            # Opening parses (and type-checks) the first block: early, cheap evidence.
            undecodable: list[bool] = []
            try:
                with _quiet_undecodable_rows(undecodable):
                    # serially: a failed check must leave no pyarrow thread calling back
                    # into Python while the process exits
                    self._reader(path, self.needed, [], threads=False)
            except pa.ArrowInvalid as exc:
                raise self._arrow_error(path, str(exc), bool(undecodable)) from None
            except (OSError, EOFError) as exc:
                raise self._unreadable(path, exc) from None

    def _header(self, path: Path) -> list[str]:
        # Decoding leniently here: bad bytes in the data are reported by the reader, with
        # the column they are in.
        try:
            with _open_bytes(path) as raw:
                text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
                row = next(csv.reader(text, delimiter=self.job.source.delimiter), None)
        except (OSError, EOFError, csv.Error) as exc:
            raise SourceError(f"{path}: cannot read as CSV: {exc}") from None
        if not row:
            raise SourceError(f"{path}: the file is empty; a CSV source needs a header row")
        return row

    def _not_utf8(self, path: Path, where: str) -> str:
        return (
            f"{path}: {where} is not valid UTF-8; re-save the file as UTF-8, or set "
            "'encoding: utf8-lossy' under source: to replace the bad bytes with U+FFFD"
        )

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

    def _reader(
        self, path: Path, columns: list[str], bad: list[Any], threads: bool = True
    ) -> pacsv.CSVStreamingReader:
        def on_invalid(row: Any) -> str:
            bad.append(row)
            return "skip"

        source: Any = str(path)
        if self._lossy:
            source = io.BufferedReader(_LossyUtf8(_open_bytes(path)), _BLOCK_BYTES)
        return pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(block_size=_BLOCK_BYTES, use_threads=threads),
            parse_options=pacsv.ParseOptions(
                delimiter=self.job.source.delimiter,
                newlines_in_values=True,
                invalid_row_handler=on_invalid,
            ),
            convert_options=pacsv.ConvertOptions(
                include_columns=columns,
                column_types={c: pa.string() for c in columns},
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )

    def _ragged(self, path: Path, row: Any) -> SourceError:
        if row.number is None:
            # Threaded parsing does not number rows; on this error path, parse again
            # serially to say which record it is.
            again: list[Any] = []
            for _ in self._reader(path, self.columns()[:1], again, threads=False):
                if again:
                    row = again[0]
                    break
        where = f"record {row.number} (the header is record 1)" if row.number else "a record"
        return SourceError(
            f"{path}: {where} has {row.actual_columns} fields but the header has "
            f"{row.expected_columns}: {row.text[:60]!r}; fix that row (quote fields that "
            "contain the delimiter)"
        )

    def _read(self, path: Path, columns: list[str], rows: int) -> Iterator[pl.DataFrame]:
        bad: list[Any] = []
        undecodable: list[bool] = []
        try:
            with _quiet_undecodable_rows(undecodable):
                reader = self._reader(path, columns, bad)
                for batch in reader:
                    if bad:
                        raise self._ragged(path, bad[0])
                    frame = pl.from_arrow(batch)
                    assert isinstance(frame, pl.DataFrame)
                    for start in range(0, frame.height, rows):
                        yield frame.slice(start, rows)
                if bad:
                    raise self._ragged(path, bad[0])
        except pa.ArrowInvalid as exc:
            raise self._arrow_error(path, str(exc), bool(undecodable)) from None
        except (OSError, EOFError) as exc:
            raise self._unreadable(path, exc) from None

    def _unreadable(self, path: Path, exc: BaseException) -> SourceError:
        text = str(exc)
        if isinstance(exc, EOFError) or "compressed" in text.lower():
            text += "; the file is damaged or incomplete (a truncated .gz?): re-create it"
        return SourceError(f"{path}: cannot read: {text}")

    def _arrow_error(self, path: Path, message: str, undecodable: bool = False) -> SourceError:
        if "invalid UTF8" in message:
            match = re.search(r"column #(\d+)", message)
            names = self._headers[path]
            idx = int(match.group(1)) if match else -1
            what = f"column {names[idx]!r}" if 0 <= idx < len(names) else "the text"
            return SourceError(self._not_utf8(path, what))
        fields = _WRONG_FIELDS.search(message)
        if fields:
            # pyarrow could not hand the row over (its bytes are not UTF-8): no number
            where = "a record that is not valid UTF-8" if undecodable else "a record"
            return SourceError(
                f"{path}: {where} has {fields.group(2)} fields but the header has "
                f"{fields.group(1)}; fix that row (quote fields that contain the delimiter)"
                + (", or re-save the file as UTF-8" if undecodable else "")
            )
        return SourceError(f"{path}: cannot parse as CSV: {message}")
