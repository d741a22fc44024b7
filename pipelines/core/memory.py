"""The allocators behind a run: memory must stay at what is live, over millions of rows.

A run streams millions of short-lived buffers (answers, journal batches, the end-of-run
merge) through a handful of threads. Two allocators then hold on to memory they no longer
use, and resident memory drifts upwards with the rows processed:

- pyarrow's default pool (mimalloc) keeps what it frees for reuse and returns it late;
  jemalloc, with a short decay, gives freed pages back (the system allocator where pyarrow
  was built without jemalloc);
- glibc's malloc gives every thread that allocates an arena of its own (up to eight per
  core), and each arena keeps its own free pages; two arenas are plenty for a run whose
  threads take turns.

Measured with ``benchmarks/memory.py`` (200,000 embedding rows): the peak fell from 458 MB
to 371 MB with jemalloc, and the drift of the sending phase from ~45 MB to ~10 MB with two
arenas.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util

# How soon jemalloc returns freed pages to the system (its default is 10 s).
DECAY_MS = 1_000
# glibc's mallopt parameter number for the arena limit (malloc.h: M_ARENA_MAX).
_M_ARENA_MAX = -8
ARENAS = 2


def use_lean_allocators() -> str:
    """Make jemalloc (or the system allocator) the default Arrow pool and cap glibc's
    arenas; the Arrow pool's name.

    Buffers already allocated keep the pool they came from, and threads that already have
    an arena keep it, so this is safe at any time; it is meant for the start of a run."""
    import pyarrow as pa  # heavy: only when a run starts

    try:
        pool = pa.jemalloc_memory_pool()
        pa.jemalloc_set_decay_ms(DECAY_MS)
    except NotImplementedError:
        pool = pa.system_memory_pool()
    pa.set_memory_pool(pool)
    _cap_glibc_arenas()
    return str(pool.backend_name)


def _cap_glibc_arenas() -> None:
    name = ctypes.util.find_library("c")
    if name is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 (glibc only: musl and macOS have no mallopt knob)
        libc.mallopt(_M_ARENA_MAX, ARENAS)
