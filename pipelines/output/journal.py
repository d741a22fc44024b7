"""The run journal: an append-only Arrow IPC stream, fsync'ed after every write.

Each arriving result is appended and made durable at once, so a crash or ``kill -9`` loses
at most the requests in flight. A crash in the middle of a write leaves a torn last
record; :func:`read_journal` stops before it, keeping every complete one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa


def read_journal(path: Path) -> Iterator[pa.RecordBatch]:
    """Complete record batches of a journal; a torn tail (crash mid-write) ends the read."""
    try:
        # read, not memory-mapped: the pages of a mapped journal (gigabytes at the end of
        # a large run) would stay resident and count against the process
        source = pa.OSFile(str(path))
    except (OSError, pa.ArrowInvalid):
        return
    with source:
        try:
            reader = pa.ipc.open_stream(source)
        except (pa.ArrowInvalid, OSError):
            return
        while True:
            try:
                yield reader.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowInvalid, OSError):
                return


class Journal:
    """An append-only Arrow IPC stream, fsync'ed after every write."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        self._file = open(path, "wb")  # lives as long as the run
        self._writer = pa.ipc.new_stream(self._file, schema)
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        for batch in table.cast(self.schema).to_batches():
            self._writer.write_batch(batch)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.rows += table.num_rows

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
        # what was fsync'ed is safe; a failed last write is a torn tail that recovery skips
        with contextlib.suppress(OSError):
            self._file.close()
