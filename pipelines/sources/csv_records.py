"""What is wrong with a CSV file pyarrow refused: a second, plain reading that finds the record.

pyarrow's CSV reader says *that* a file is bad (one exception type, a message whose wording
is its own), not reliably *where*: threaded parsing does not number rows. When it refuses a
file, :func:`find_problem` reads the file again with Python's ``csv`` module (same
delimiter, quoting and empty-line rules) from the start, skipping the records already
delivered, and returns the first problem it sees as a :class:`Finding`:

- a record bigger than pyarrow's parse block (a "straddling object"): the block to retry
  with, up to :data:`MAX_RECORD_BYTES`; a record that does not fit a block that big is a
  located refusal;
- a record with the wrong number of fields, or a needed column that is not UTF-8: a
  located refusal, with the record's number (the header is record 1).

This runs only on the error path; the reading that delivers rows is pyarrow's alone.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from pipelines.core.errors import SourceError

MIB = 1 << 20
#: The largest parse block, so the largest record (one row, all its fields) always read.
MAX_RECORD_BYTES = 64 * MIB
_QUOTE = '"'


@dataclass(frozen=True)
class Finding:
    """The first problem after the delivered records: retry with ``block``, or ``error``."""

    error: SourceError | None = None
    block: int | None = None


def open_bytes(path: Path) -> IO[bytes]:
    """The file's bytes, ``.gz`` decompressed on the fly."""
    if path.name.lower().endswith(".gz"):
        return cast(IO[bytes], gzip.GzipFile(path, "rb"))
    return open(path, "rb")


def not_utf8(path: Path, where: str) -> str:
    """The refusal of text that is not UTF-8, with the way out."""
    return (
        f"{path}: {where} is not valid UTF-8; re-save the file as UTF-8, or set "
        "'encoding: utf8-lossy' under source: to replace the bad bytes with U+FFFD"
    )


def _shown(text: str) -> str:
    # surrogate escapes stand for the bytes that are not UTF-8: show them as U+FFFD
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _undecodable(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def record_bytes(fields: Sequence[str]) -> int:
    """An upper bound of a record's size in the file: quotes around and doubled inside
    every field, a delimiter after each, and a CRLF."""
    size = 2
    for value in fields:
        # no copy of a (possibly huge) ASCII field just to measure it
        length = len(value) if value.isascii() else len(value.encode("utf-8", "surrogateescape"))
        size += length + value.count(_QUOTE) + 3
    return size


def block_for(size: int, ceiling: int) -> int:
    """A parse block that holds a record of ``size`` bytes with room to spare."""
    block = 1 << 20
    while block < 2 * size:
        block *= 2
    return min(block, ceiling)


def grown(block: int, ceiling: int) -> int:
    """The next parse block after ``block``: four times bigger, at most ``ceiling``."""
    return min(4 * block, ceiling)


@contextlib.contextmanager
def _field_limit(limit: int) -> Iterator[None]:
    # csv's limit is process-wide (default 131,072 characters): set only while this scan
    # runs. It also bounds the scan's memory: csv holds a field as 4 bytes a character.
    previous = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _where(number: int) -> str:
    return f"record {number} (the header is record 1)"


@dataclass(frozen=True)
class Scan:
    """What to look for: the file, the records already delivered and the current block."""

    path: Path
    delimiter: str
    columns: Sequence[str]  # the columns read (their bytes must be UTF-8 unless lossy)
    lossy: bool
    delivered: int  # data records pyarrow already delivered from this file
    block: int  # pyarrow's current parse block, in bytes
    limit: int = MAX_RECORD_BYTES  # the largest block (a record that fits it is read)

    @property
    def field_limit(self) -> int:
        """The longest field (in characters) this scan reads whole: up to half the block
        while the block can grow (a longer one only says "grow"), else the limit."""
        return self.limit if self.block >= self.limit else self.block // 2

    def check(self, number: int, record: list[str], header: list[str]) -> Finding | None:
        """The problem of one record (``number``: the header is 1), if it has one."""
        size = record_bytes(record)
        if size > self.limit:
            return self.too_big(number, f"is {size / MIB:.1f} MiB,")
        if number > 1 and len(record) != len(header):
            noun = "field" if len(record) == 1 else "fields"
            text = self.delimiter.join(record)
            hint = ", or re-save the file as UTF-8" if _undecodable(text) else ""
            return Finding(
                SourceError(
                    f"{self.path}: {_where(number)} has {len(record)} {noun} but the header "
                    f"has {len(header)}: {_shown(text)[:60]!r}; fix that row (quote fields "
                    f"that contain the delimiter){hint}"
                )
            )
        if 2 * size > self.block and self.block < self.limit:
            return Finding(block=block_for(size, self.limit))
        if not self.lossy and number > 1:
            for name in self.columns:
                if name in header and _undecodable(record[header.index(name)]):
                    where = f"{_where(number)}, column {name!r}"
                    return Finding(SourceError(not_utf8(self.path, where)))
        return None

    def too_big(self, number: int, what: str) -> Finding:
        """The refusal of record ``number``, which ``what`` (is N MiB, / has a field) is
        over the limit."""
        return Finding(
            SourceError(
                f"{self.path}: {_where(number)} {what} over the limit of "
                f"{self.limit / MIB:g} MiB for one record; shorten or split that field"
            )
        )


def find_problem(scan: Scan) -> Finding | None:
    """The first problem in the records after ``scan.delivered``, or ``None`` (pyarrow
    refused something this reading does not see). Raises :class:`OSError`/:class:`EOFError`
    when the file cannot be read."""
    with open_bytes(scan.path) as raw, _field_limit(scan.field_limit):
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.reader(text, delimiter=scan.delimiter, strict=False)
        number = 0
        header: list[str] = []
        try:
            for record in reader:
                if not record:
                    continue  # pyarrow skips empty lines too, and does not count them
                number += 1
                if number == 1:
                    header = record
                elif number - 1 <= scan.delivered:
                    continue  # pyarrow read these already
                found = scan.check(number, record, header)
                if found is not None:
                    return found
        except csv.Error:
            # the only csv error a non-strict reader of decoded text raises: a field over
            # the limit set above
            if scan.block < scan.limit:
                return Finding(block=grown(scan.block, scan.limit))
            return scan.too_big(number + 1, "has a field")
    return None
