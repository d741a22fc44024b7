"""pipelines: batch data pipelines for Cloudflare Workers AI.

Public API: load a job (:func:`load_job`), estimate it (:func:`plan_job`), run it
(:func:`run_job` / :func:`arun`), the providers, the neuron ledger, the emulator, the model
catalog and the error tree.

Importing the package loads nothing heavy: each public name is imported from its module on
first use (PEP 562), so ``pipelines --version`` and ``--help`` start without the web server,
polars or httpx. The ``TYPE_CHECKING`` block gives type checkers the real names;
tests/test_public_api.py keeps it and the table below in step.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pipelines.core.version import __version__

if TYPE_CHECKING:
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

_ERRORS = "pipelines.core.errors"

# Public name -> the module it is imported from on first access.
_LAZY: dict[str, str] = {
    "Ledger": "pipelines.budget",
    "Usage": "pipelines.catalog.metering",
    "neurons": "pipelines.catalog.metering",
    "ModelInfo": "pipelines.catalog.models",
    "TaskKind": "pipelines.catalog.models",
    "get_model": "pipelines.catalog.models",
    "list_models": "pipelines.catalog.models",
    "AuthenticationFailed": _ERRORS,
    "BudgetExhausted": _ERRORS,
    "CapacityExceeded": _ERRORS,
    "DailyNeuronsExhausted": _ERRORS,
    "InvalidInput": _ERRORS,
    "JobError": _ERRORS,
    "OutputError": _ERRORS,
    "PaidPlanRequired": _ERRORS,
    "PipelinesError": _ERRORS,
    "ProviderError": _ERRORS,
    "RateLimited": _ERRORS,
    "ServerError": _ERRORS,
    "SourceError": _ERRORS,
    "TerminalError": _ERRORS,
    "TransientError": _ERRORS,
    "TransportError": _ERRORS,
    "UnknownModel": _ERRORS,
    "EmulatorConfig": "pipelines.emulator",
    "running_emulator": "pipelines.emulator",
    "Job": "pipelines.job",
    "load_job": "pipelines.job.load",
    "load_jobs": "pipelines.job.load",
    "arun": "pipelines.ops.jobset",
    "run_job": "pipelines.ops.jobset",
    "CloudflareProvider": "pipelines.providers",
    "Provider": "pipelines.providers",
    "ProviderSettings": "pipelines.providers",
    "Plan": "pipelines.run.plan",
    "plan_job": "pipelines.run.plan",
    "RunReport": "pipelines.run.report",
    "StopReason": "pipelines.run.report",
    "RunContext": "pipelines.run.runner",
    "RunSettings": "pipelines.run.settings",
    "arun_job": "pipelines.run.runner",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    # cached, so __getattr__ runs once per name
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
