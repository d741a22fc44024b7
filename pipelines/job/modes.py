"""Batch mode (``limits.mode: batch`` or ``--mode batch``): which jobs may run on Cloudflare's
asynchronous Batch API, said once for the job checks and for the command-line switch.

A job runs in batch mode only with a model the catalog marks ``batch_api`` and only for the
text families (embed, translate, generate): their answers are read back from what a run
recorded, while a transcription would need its audio again.
"""

from __future__ import annotations

from pipelines.catalog.models import ModelInfo, list_models
from pipelines.core.errors import JobError
from pipelines.job.spec import Job, RunMode

BATCH_KINDS = ("embed", "translate", "generate")
BATCH_PROVIDERS = ("auto", "cloudflare", "emulator")


def batch_models(kind: str | None = None) -> list[str]:
    """Ids of the catalog's models with the Batch API (of task ``kind``, when given)."""
    return [
        m.id
        for m in list_models()
        if m.batch_api and m.task in BATCH_KINDS and (kind is None or m.task == kind)
    ]


def batch_problem(kind: str, model: ModelInfo | None, provider: str | None) -> str | None:
    """Why a job of ``kind`` with ``model`` on ``provider`` cannot run in batch mode."""
    if kind not in BATCH_KINDS:
        return (
            f"{kind} jobs run in sync mode only (batch mode takes {', '.join(BATCH_KINDS)} "
            "jobs); remove limits.mode: batch"
        )
    if provider is not None and provider not in BATCH_PROVIDERS:
        return (
            f"provider {provider} has no Batch API; batch mode runs on provider cloudflare "
            "(or emulator)"
        )
    if model is not None and not model.batch_api:
        others = batch_models(kind) or batch_models()
        return (
            f"{model.id} does not take Cloudflare's Batch API; models that do: "
            f"{', '.join(others)} (or use limits.mode: sync)"
        )
    return None


def with_mode(job: Job, model: ModelInfo, mode: RunMode | None, provider: str | None) -> Job:
    """``job`` in ``mode`` (``--mode``; ``None``: the job's own), checked against ``model``
    and the ``--provider`` override; raises :class:`JobError` naming the job file."""
    if mode is None or mode == job.limits.mode:
        chosen = job
    else:
        limits = job.limits.model_copy(update={"mode": mode})
        chosen = job.model_copy(update={"limits": limits})  # keeps where the job came from
    if chosen.limits.mode != "batch":
        return chosen
    why = batch_problem(job.task.kind, model, provider or job.provider)
    if why is not None:
        where = f"{job.file}: " if job.file is not None else ""
        raise JobError(f"{where}batch mode: {why}")
    return chosen
