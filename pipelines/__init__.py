"""pipelines: batch data pipelines for Cloudflare Workers AI.

Public API: the model catalog, the error tree and the token/neuron arithmetic. The job
runner, providers and the emulator are exported from here as they land.
"""

from __future__ import annotations

from pipelines.catalog import ModelInfo, TaskKind, get_model, list_models
from pipelines.errors import (
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
from pipelines.metering import Usage, neurons

__version__ = "0.1.0"

__all__ = [
    "AuthenticationFailed",
    "BudgetExhausted",
    "CapacityExceeded",
    "DailyNeuronsExhausted",
    "InvalidInput",
    "JobError",
    "ModelInfo",
    "OutputError",
    "PaidPlanRequired",
    "PipelinesError",
    "ProviderError",
    "RateLimited",
    "ServerError",
    "SourceError",
    "TaskKind",
    "TerminalError",
    "TransientError",
    "TransportError",
    "UnknownModel",
    "Usage",
    "__version__",
    "get_model",
    "list_models",
    "neurons",
]
