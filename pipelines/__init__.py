"""pipelines: batch data pipelines for Cloudflare Workers AI.

Public API: load a job (:func:`load_job`), estimate it (:func:`plan_job`), run it
(:func:`run_job` / :func:`arun`), the providers, the neuron ledger, the emulator, the model
catalog and the error tree.
"""

from __future__ import annotations

from pipelines.budget import Ledger
from pipelines.catalog.metering import Usage, neurons
from pipelines.catalog.models import ModelInfo, TaskKind, get_model, list_models
from pipelines.core.errors import (
    AuthenticationFailed,
    BudgetExhausted,
    CapacityExceeded,
    DailyNeuronsExhausted,
    InvalidInput,
    JobError,
    OutputError,
    PaidPlanRequired,
    PipelinesError,
    ProviderError,
    RateLimited,
    ServerError,
    SourceError,
    TerminalError,
    TransientError,
    TransportError,
    UnknownModel,
)
from pipelines.core.version import __version__
from pipelines.emulator import EmulatorConfig, running_emulator
from pipelines.job import Job
from pipelines.job.load import load_job, load_jobs
from pipelines.ops.jobset import arun, run_job
from pipelines.providers import CloudflareProvider, Provider, ProviderSettings
from pipelines.run.plan import Plan, plan_job
from pipelines.run.report import RunReport, StopReason
from pipelines.run.runner import RunContext, arun_job
from pipelines.run.settings import RunSettings

__all__ = [
    "AuthenticationFailed",
    "BudgetExhausted",
    "CapacityExceeded",
    "CloudflareProvider",
    "DailyNeuronsExhausted",
    "EmulatorConfig",
    "InvalidInput",
    "Job",
    "JobError",
    "Ledger",
    "ModelInfo",
    "OutputError",
    "PaidPlanRequired",
    "PipelinesError",
    "Plan",
    "Provider",
    "ProviderError",
    "ProviderSettings",
    "RateLimited",
    "RunContext",
    "RunReport",
    "RunSettings",
    "ServerError",
    "SourceError",
    "StopReason",
    "TaskKind",
    "TerminalError",
    "TransientError",
    "TransportError",
    "UnknownModel",
    "Usage",
    "__version__",
    "arun",
    "arun_job",
    "get_model",
    "list_models",
    "load_job",
    "load_jobs",
    "neurons",
    "plan_job",
    "run_job",
    "running_emulator",
]
