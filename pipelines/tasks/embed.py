"""Embeddings: texts → ``embedding`` vectors, packed many texts per request."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.core.errors import TransportError
from pipelines.tasks.base import Call, Task


class EmbedTask(Task):
    """Texts → ``embedding`` (fixed-size list of float32), packed many per request."""

    @property
    def result_fields(self) -> list[pa.Field]:
        dim = self.model.dimensions or 0
        return [pa.field("embedding", pa.list_(pa.float32(), dim))]

    def inputs_for(self, texts: list[str], extra: dict[str, list[Any]]) -> dict[str, Any]:
        return {"text": list(texts), **self.params}

    def parse(self, call: Call, result: Any) -> dict[str, pa.Array]:
        data = result.get("data") if isinstance(result, dict) else None
        if data is None and isinstance(result, dict):
            data = result.get("response")
        dim = self.model.dimensions or 0
        try:
            matrix = np.asarray(data, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise TransportError("embedding response is not a numeric matrix") from exc
        if matrix.ndim != 2 or matrix.shape != (call.size, dim):
            raise TransportError(
                f"embedding response has shape {matrix.shape}, expected ({call.size}, {dim})"
            )
        flat = pa.array(matrix.reshape(-1), type=pa.float32())
        return {"embedding": pa.FixedSizeListArray.from_arrays(flat, dim)}
