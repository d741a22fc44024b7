"""One shard of a job (``--shard I/N``, issue 17): the rows whose stable key hash falls in
shard ``I`` of ``N``, written to ``<output>/part-I-of-N.parquet``.

The hash is the first 64-bit word of the key's BLAKE2b-128 digest (the digest the sources
already compute to find repeated keys): stable across machines, processes and versions, so
a row always belongs to the same shard and re-running a shard resumes it exactly once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipelines.core.errors import JobError

if TYPE_CHECKING:  # numpy is loaded by the sources, never by `--help`
    import numpy as np

_SPEC = re.compile(r"^\s*(\d{1,6})\s*/\s*(\d{1,6})\s*$")
_PART = re.compile(r"^part-(\d+)-of-(\d+)\.parquet$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"`` with ``0 <= I < N``; a :class:`JobError` (exit 2) otherwise."""
        match = _SPEC.match(text)
        if match is None:
            raise JobError(f"--shard must be I/N, e.g. 0/4, not {text!r}")
        index, count = int(match.group(1)), int(match.group(2))
        if count < 1 or index >= count:
            raise JobError(f"--shard {text}: I must be between 0 and N-1 (N >= 1)")
        return cls(index, count)

    @property
    def file_name(self) -> str:
        """``part-I-of-N.parquet``."""
        return f"part-{self.index}-of-{self.count}.parquet"

    def mask(self, digests: np.ndarray) -> np.ndarray:
        """Which rows (their key digests, ``n x 2`` uint64 words) belong to this shard."""
        import numpy as np

        if digests.size == 0:
            return np.zeros(0, dtype=bool)
        return np.asarray(digests[:, 0] % np.uint64(self.count) == np.uint64(self.index))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def part_of(name: str) -> Shard | None:
    """The shard a file named ``part-I-of-N.parquet`` holds, or None."""
    match = _PART.match(name)
    if match is None:
        return None
    index, count = int(match.group(1)), int(match.group(2))
    return Shard(index, count) if 0 <= index < count else None
