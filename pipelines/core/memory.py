"""The allocator behind Arrow's buffers for a run.

pyarrow's default pool (mimalloc) keeps what it frees for reuse and returns it to the
system late: over a long run that streams millions of rows through short-lived buffers
(answers, journal batches, the end-of-run merge), resident memory drifts upwards with the
rows processed. jemalloc, with a short decay, gives freed pages back, so memory stays at
what is live (measured by ``benchmarks/memory.py``: at 200,000 embedding rows the peak fell
from 458 MB to 371 MB). Where pyarrow was built without jemalloc, the system allocator is
used: also better than a pool that holds on.
"""

from __future__ import annotations

# How soon jemalloc returns freed pages to the system (its default is 10 s).
DECAY_MS = 1_000


def use_lean_arrow_pool() -> str:
    """Make jemalloc (or the system allocator) the default Arrow pool; the pool's name.

    Buffers already allocated keep the pool they came from, so this is safe at any time;
    it is meant for the start of a run."""
    import pyarrow as pa  # heavy: only when a run starts

    try:
        pool = pa.jemalloc_memory_pool()
        pa.jemalloc_set_decay_ms(DECAY_MS)
    except (NotImplementedError, pa.ArrowNotImplementedError):
        pool = pa.system_memory_pool()
    pa.set_memory_pool(pool)
    return str(pool.backend_name)
