"""The switches of one ``pipelines run``: built once (by the CLI, or by a library caller) and
passed down whole, so no layer re-declares them as keyword arguments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class RunSettings:
    """Per-run switches; the job file says everything else."""

    provider: str | None = None  # overrides the job's ``provider`` (None: the job's, or auto)
    base_url: str | None = None  # overrides the job's ``base_url`` and the environment
    fresh: bool = False  # discard the existing output first (first pass only, with --wait)
    retry_failed: bool = False  # send rows that failed permanently once more
    repair: bool = False  # image jobs: make the images whose files are missing again
    max_neurons: int | None = None  # cap on what this run may spend (beats the job's)
    wait: bool = False  # at the daily cap, sleep until 00:00 UTC and go on
    progress: bool = False  # show a progress bar
    use_cache: bool = True  # answer identical inputs from the result cache
    batch_rows: int = 20_000  # the most source rows read at once
    # --ray with the local provider: handles of the Ray actors that hold the local models
    inference: tuple[object, ...] = ()
    mode: Literal["sync", "batch"] | None = None  # overrides limits.mode (None: the job's)
