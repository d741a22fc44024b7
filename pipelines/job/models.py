"""The model a job runs: its catalog entry, or for a model outside the catalog that the job
file sends to an OpenAI-compatible server, the entry :mod:`pipelines.catalog.external` makes
for it, budgeted in the unit the job caps (``budget.daily_tokens`` / ``daily_requests``).

Every layer above asks :func:`job_model`, never the catalog directly, so a job's model is
resolved one way everywhere (run, plan, launch, checks).
"""

from __future__ import annotations

from pipelines.catalog.external import ExternalTask, ExternalUnit, external_model
from pipelines.catalog.models import ModelInfo, get_model, has_model
from pipelines.job.problems import Problems
from pipelines.job.spec import Job

# Ids of Workers AI models: one outside the catalog cannot be priced, so it stays unknown.
WORKERS_AI_PREFIXES = ("@cf/", "@hf/")
EXTERNAL_KINDS = ("embed", "generate")
EXTERNAL_PROVIDER = "openai"


def may_be_external(model_id: str) -> bool:
    """Whether ``model_id`` may name a model outside the catalog (not a Workers AI id)."""
    return not has_model(model_id) and not model_id.startswith(WORKERS_AI_PREFIXES)


def job_model(job: Job) -> ModelInfo:
    """The job's model; raises :class:`~pipelines.core.errors.UnknownModel` (with the
    catalog's hint) for an id that is neither in the catalog nor allowed outside it."""
    task = job.task
    cap = job.budget.external_cap()
    external = (
        may_be_external(task.model)
        and job.provider == EXTERNAL_PROVIDER
        and task.kind in EXTERNAL_KINDS
        and cap is not None
    )
    if not external or cap is None:
        return get_model(task.model)
    unit: ExternalUnit = "tokens" if cap[0] == "tokens" else "requests"
    kind: ExternalTask = "embed" if task.kind == "embed" else "generate"
    return external_model(task.model, kind, unit)


# -- the rules of a job file about it (see pipelines.job.checks) ---------------------------

_CAPS = ("daily_tokens", "daily_requests")


def external_problem(job: Job, problems: Problems) -> str | None:
    """Why the job's model, outside the catalog, cannot run as the job says (``None``: it
    can, given its budget, which :func:`check_budget_unit` checks)."""
    task = job.task
    model_id = task.model
    if not may_be_external(model_id) or not problems.known(("provider",)):
        return None
    if job.provider != EXTERNAL_PROVIDER:
        return None  # an unknown Workers AI model: the catalog's hint says it better
    if problems.known(("task", "kind")) and task.kind not in EXTERNAL_KINDS:
        return (
            f"{model_id!r} is not in the catalog: provider openai runs models outside it "
            "for embed and generate jobs only"
        )
    return ""


def check_budget_unit(job: Job, model: ModelInfo, problems: Problems) -> None:
    """A model outside the catalog is capped in tokens or requests (exactly one of them),
    never in neurons; a catalog model is capped in neurons only."""
    if not problems.known(*(("budget", c) for c in _CAPS), ("budget", "daily_neurons")):
        return
    given = [c for c in _CAPS if getattr(job.budget, c) is not None]
    if model.budget_unit == "neurons":
        for cap in given:
            problems.add(
                ("budget", cap),
                f"only for a model outside the catalog (provider openai); {model.id} is "
                "priced in neurons: cap it with budget.daily_neurons",
            )
        return
    if len(given) > 1:
        problems.add(("budget", "daily_requests"), "give daily_tokens or daily_requests, not both")
    if "daily_neurons" in job.budget.model_fields_set:
        problems.add(
            ("budget", "daily_neurons"),
            f"{model.id} is not a Workers AI model, so it is not priced in neurons: cap it "
            "with budget.daily_tokens or budget.daily_requests instead",
        )
    if job.task.truncate:
        problems.add(
            ("task", "truncate"),
            f"the token limit of {model.id} is unknown, so texts cannot be cut; remove it",
        )
