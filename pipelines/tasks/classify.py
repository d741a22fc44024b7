"""Text classification: text → the top ``label`` and its ``score``."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from pipelines.core.errors import TransportError
from pipelines.tasks.base import Call, Task


class ClassifyTask(Task):
    """Text → ``label`` and ``score`` (the top class), one text per request."""

    @property
    def result_fields(self) -> list[pa.Field]:
        return [pa.field("label", pa.string()), pa.field("score", pa.float32())]

    def inputs_for(self, texts: list[str], extra: dict[str, list[Any]]) -> dict[str, Any]:
        return {"text": texts[0], **self.params}

    def parse(self, call: Call, result: Any) -> dict[str, pa.Array]:
        if not isinstance(result, list) or not result:
            raise TransportError("classification response is not a non-empty list")
        best = max(result, key=lambda r: float(r.get("score", 0.0)))
        return {
            "label": pa.array([str(best.get("label"))], pa.string()),
            "score": pa.array([float(best.get("score", 0.0))], pa.float32()),
        }
