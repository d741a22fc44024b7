"""Every error the package raises, in one tree.

::

    PipelinesError                     root; .exit_code for the CLI
    ├── JobError                       invalid job file or usage (exit 2)
    ├── SourceError                    missing/unreadable input, missing columns (exit 2)
    ├── OutputError                    output cannot be written or is incompatible (exit 2)
    ├── BudgetExhausted                our own ledger says stop (exit 3, resumable)
    └── ProviderError                  .status, .code, .model
        ├── TransientError             retried with backoff
        │   ├── RateLimited            429 / 3021 or 429 without a code; .retry_after
        │   ├── CapacityExceeded       429 / 3040; .retry_after
        │   ├── ServerError            5xx, 408 / 3007 / 3008
        │   └── TransportError         timeouts, resets, malformed bodies
        └── TerminalError              never retried
            ├── InvalidInput           400 / 5006 5004 3003, 413 / 3006: a row failure
            ├── UnknownModel           400 / 5007, 404 / 3042
            ├── AuthenticationFailed   401 / 403 / 10000: aborts the run
            ├── PaidPlanRequired       403 / 5035: aborts the run
            └── DailyNeuronsExhausted  429 / 3036 / 4006: stop until 00:00 UTC (exit 3)

Messages say what happened and what to do. The API token never appears in any of them.
"""

from __future__ import annotations

from typing import Any


class PipelinesError(Exception):
    """Root of the tree; ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def attrs(self) -> dict[str, Any]:
        """Structured fields, for manifests and failure rows."""
        return {"error": type(self).__name__, "message": self.message}


class JobError(PipelinesError):
    """The job file or the command line is wrong."""

    exit_code = 2


class SourceError(PipelinesError):
    """The input cannot be read as the job describes."""

    exit_code = 2


class OutputError(PipelinesError):
    """The output cannot be written, or existing output does not match the job."""

    exit_code = 2


class BudgetExhausted(PipelinesError):
    """The neuron budget does not allow the next request."""

    exit_code = 3


class ProviderError(PipelinesError):
    """A model call failed; carries the HTTP status and Cloudflare error code."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        model: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.model = model
        self.retry_after = retry_after

    def attrs(self) -> dict[str, Any]:
        """Structured fields, for manifests and failure rows."""
        return {**super().attrs(), "status": self.status, "code": self.code, "model": self.model}


class TransientError(ProviderError):
    """Worth retrying after a pause."""

    retryable = True


class RateLimited(TransientError):
    """Per-minute request limit reached (3021): everybody slows down."""


class CapacityExceeded(TransientError):
    """Cloudflare is out of capacity (3040): back off and retry."""


class ServerError(TransientError):
    """5xx or a Cloudflare-side timeout."""


class TransportError(TransientError):
    """The request never got a well-formed answer (timeout, reset, garbage)."""


class TerminalError(ProviderError):
    """Retrying the same request cannot help."""


class InvalidInput(TerminalError):
    """The model refused this input; the rows in it fail, the run goes on."""

    exit_code = 1


class UnknownModel(TerminalError):
    """No such model."""

    exit_code = 2


class AuthenticationFailed(TerminalError):
    """Token missing, wrong or lacking Workers AI permissions; aborts the run."""

    exit_code = 2


class PaidPlanRequired(TerminalError):
    """The model needs the Workers Paid plan; aborts the run."""

    exit_code = 2


class DailyNeuronsExhausted(TerminalError):
    """The account's daily neuron allocation is used up; nothing works before 00:00 UTC."""

    exit_code = 3


class CredentialsError(JobError):
    """The API token (CLOUDFLARE_API_TOKEN or the file CLOUDFLARE_API_TOKEN_FILE names)
    cannot be read or cannot be a token; the message names the variable, never the value."""


class StateError(PipelinesError):
    """The state folder, or a database in it (ledger, cache), cannot be used (exit 2)."""

    exit_code = 2
