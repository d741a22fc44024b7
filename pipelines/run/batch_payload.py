"""Packing calls into Batch API payloads: each call's requests, as they would be sent one by
one in sync mode, become items of a payload of at most ``limits.batch_items`` requests and
at most 10 MB (Cloudflare's documented limit), each item carrying an ``external_reference``
that names its payload and its place in it.

Pure: ``run`` packs what it submits with it, and ``plan`` counts payloads with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipelines.catalog.models import ModelInfo
from pipelines.providers.cloudflare import BATCH_MAX_BYTES
from pipelines.providers.wire import encode_json, json_inputs
from pipelines.tasks.base import Call
from pipelines.tasks.task import Task

# ``{"requests":[]}`` around the items
_ENVELOPE_BYTES = len(b'{"requests":[]}')
# what an item's reference adds: ``,"external_reference":"<32 hex>:<index>"`` and the comma
# between items (indexes stay far below 10 digits)
_REFERENCE_BYTES = len(b',"external_reference":""') + 32 + 1 + 10 + 1


def reference(batch_id: str, index: int) -> str:
    """The ``external_reference`` of request ``index`` of payload ``batch_id``."""
    return f"{batch_id}:{index}"


@dataclass(frozen=True)
class Entry:
    """A call ready for a payload: its request bodies and the bytes they take there."""

    call: Call
    bodies: tuple[dict[str, Any], ...]
    size: int
    attempts: int = 0  # payloads that carried these rows before (transient failures)


def entry_for(task: Task, model: ModelInfo, call: Call, attempts: int = 0) -> Entry:
    """``call``'s requests as they go into a payload (text calls: no media to load)."""
    bodies = tuple(dict(body) for body in task.requests(call).bodies)
    size = sum(len(encode_json(json_inputs(model, b), model=model.id)) for b in bodies)
    return Entry(call, bodies, size + _REFERENCE_BYTES * len(bodies), attempts)


def too_big(entry: Entry) -> bool:
    """Whether ``entry`` alone is over the payload limit (it can never be submitted)."""
    return entry.size + _ENVELOPE_BYTES > BATCH_MAX_BYTES


@dataclass
class PayloadBuffer:
    """Entries waiting to be submitted together."""

    max_items: int
    max_bytes: int = BATCH_MAX_BYTES
    entries: list[Entry] = field(default_factory=list)
    items: int = 0
    bytes: int = _ENVELOPE_BYTES

    def fits(self, entry: Entry) -> bool:
        """Whether ``entry`` can join (an empty buffer takes anything not too big)."""
        if not self.entries:
            return True
        return (
            self.items + len(entry.bodies) <= self.max_items
            and self.bytes + entry.size <= self.max_bytes
        )

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)
        self.items += len(entry.bodies)
        self.bytes += entry.size

    @property
    def full(self) -> bool:
        return self.items >= self.max_items

    def take(self) -> list[Entry]:
        """Everything buffered, emptying the buffer."""
        out, self.entries = self.entries, []
        self.items, self.bytes = 0, _ENVELOPE_BYTES
        return out


def count_payloads(entries: Iterable[Entry], max_items: int) -> int:
    """How many payloads ``entries`` make, packed in order as a run packs them."""
    buffer = PayloadBuffer(max_items)
    payloads = 0
    for entry in entries:
        if not buffer.fits(entry):
            buffer.take()
            payloads += 1
        buffer.add(entry)
        if buffer.full:
            buffer.take()
            payloads += 1
    return payloads + (1 if buffer.entries else 0)
