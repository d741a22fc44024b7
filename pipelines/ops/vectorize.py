"""``pipelines vectorize``: create an index for a model, show one, query one by text.

An index made here records its model in its description (``pipelines model=<id>``), so a
query by text embeds the text with the model the vectors came from without being told.
Embedding the query spends neurons, so it goes through the ledger like any run: reserved
at the token count's price first, settled at what the answer reports, refused when the
day's cap has no room.
"""

from __future__ import annotations

from typing import Any

from pipelines.budget import Ledger, effective_budget, resolve_account
from pipelines.catalog.metering import Usage, neurons
from pipelines.catalog.models import ModelInfo, get_model
from pipelines.catalog.tokens import model_tokens
from pipelines.core.errors import JobError
from pipelines.providers.base import ProviderSettings
from pipelines.providers.vectorize import VectorizeClient

__all__ = ["create_index", "index_info", "model_of", "query_index"]

MODEL_TAG = "pipelines model="
QUERY_JOB = "vectorize-query"  # the ledger's job name for query embeddings


def embedding_model(model_id: str) -> ModelInfo:
    model = get_model(model_id)
    if model.task != "embed" or not model.dimensions:
        raise JobError(f"{model_id} is not an embedding model (see `pipelines models`)")
    return model


def _client(base_url: str | None) -> VectorizeClient:
    return VectorizeClient(ProviderSettings.from_env(base_url))


async def create_index(
    name: str, model_id: str, metric: str, base_url: str | None = None
) -> dict[str, Any]:
    """An index with ``model_id``'s dimensions and ``metric``; its info."""
    model = embedding_model(model_id)
    assert model.dimensions is not None
    async with _client(base_url) as client:
        return await client.create(name, model.dimensions, metric, f"{MODEL_TAG}{model.id}")


async def index_info(name: str, base_url: str | None = None) -> dict[str, Any]:
    async with _client(base_url) as client:
        return await client.info(name)


def model_of(info: dict[str, Any]) -> str | None:
    """The model an index made by ``create_index`` was made for."""
    description = str(info.get("description") or "")
    return description.split(MODEL_TAG, 1)[1].split()[0] if MODEL_TAG in description else None


async def _embed(model: ModelInfo, text: str, settings: ProviderSettings) -> list[float]:
    from pipelines.providers.cloudflare import CloudflareProvider

    tokens = model_tokens(model, [text])[0]
    budget = effective_budget(None, None)
    with Ledger(
        account=resolve_account(settings.account_id or None),
        daily_neurons=budget.daily_neurons,
        reserve=budget.reserve,
    ) as ledger:
        reservation = ledger.reserve(QUERY_JOB, model.id, neurons(model, Usage(tokens)))
        provider = CloudflareProvider(settings)
        try:
            answer = await provider.run(model, {"text": [text]})
        except BaseException:
            ledger.release(reservation)
            raise
        finally:
            await provider.aclose()
        reported = answer.get("usage") if isinstance(answer, dict) else None
        used = reported.get("prompt_tokens") if isinstance(reported, dict) else None
        ledger.commit(reservation, neurons(model, Usage(used if isinstance(used, int) else tokens)))
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list) or not data or not isinstance(data[0], list):
        raise JobError(f"{model.id} answered without a vector")
    return [float(v) for v in data[0]]


async def query_index(
    name: str,
    text: str,
    *,
    top_k: int = 5,
    model_id: str | None = None,
    namespace: str | None = None,
    base_url: str | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """The model used and the ``top_k`` nearest vectors to ``text``'s embedding."""
    settings = ProviderSettings.from_env(base_url)
    async with VectorizeClient(settings) as client:
        info = await client.info(name)
        chosen = model_id or model_of(info)
        if chosen is None:
            raise JobError(f"index {name} does not say which model made its vectors: pass --model")
        model = embedding_model(chosen)
        dims = (info.get("config") or {}).get("dimensions")
        if dims != model.dimensions:
            raise JobError(f"index {name} has {dims} dimensions, {model.id} {model.dimensions}")
        vector = await _embed(model, text, settings)
        return model.id, await client.query(name, vector, top_k=top_k, namespace=namespace)
