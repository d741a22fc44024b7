"""Local-model inference through Ray (``--ray`` with the local provider, issue 17): a pool
of Ray actors, each holding the offline models once, spread over the cluster's nodes, so a
sharded local job uses every node's CPUs and not only those of the node its shard runs on.

The shards keep their own runner (budget, journal, output); only ``run(model, inputs)``
goes to an actor, round-robin. The answers are those of :class:`LocalProvider` itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from pipelines.catalog.models import ModelInfo
from pipelines.providers.local import LocalProvider, _backend


class LocalModels:
    """A Ray actor's body: the offline models of this process, loaded on first use."""

    def infer(self, model: ModelInfo, inputs: dict[str, Any]) -> Any:
        return _backend(model).run(model, inputs)


class RayLocalProvider(LocalProvider):
    """The local provider whose inference runs on a pool of :class:`LocalModels` actors."""

    def __init__(self, actors: Sequence[Any]) -> None:
        super().__init__()
        if not actors:
            raise ValueError("a Ray inference pool needs at least one actor")
        self._next = itertools.cycle(list(actors))

    async def run(self, model: ModelInfo, inputs: dict[str, Any]) -> Any:
        self.produced_by(model)  # a missing model says so here, before the actor is asked
        # a Ray ObjectRef is awaitable: the event loop is never blocked
        return await next(self._next).infer.remote(model, inputs)
