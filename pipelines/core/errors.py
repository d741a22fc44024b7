"""Every error the package raises, in one tree.

::

    PipelinesError                     root; .exit_code for the CLI
    ├── JobError                       invalid job file or usage (exit 2)
    ├── SourceError                    missing/unreadable input, missing columns (exit 2)
    ├── OutputError                    output cannot be written or is incompatible (exit 2)
    ├── BudgetExhausted                our own budget says stop (exit 3); .reason: BudgetStop
    └── ProviderError                  .status, .code, .model; .scope: Scope
        ├── TransientError             TRANSIENT: retried with backoff
        │   ├── RateLimited            429 / 3021 or 429 without a code; .retry_after
        │   ├── CapacityExceeded       429 / 3040; .retry_after
        │   ├── ServerError            5xx, 408 / 3007 / 3008
        │   ├── TransportError         timeouts, resets, malformed bodies
        │   └── JsonModeUnmet          "JSON Mode couldn't be met" (code and status unverified)
        └── TerminalError              never retried
            ├── InvalidInput           ROW: 400 / 5006 5004 3003, 413 / 3006
            ├── UnknownModel           RUN: 400 / 5007, 404 / 3042
            ├── AuthenticationFailed   RUN: 401 / 403 / 10000
            ├── PaidPlanRequired       RUN: 403 / 5035
            └── DailyNeuronsExhausted  DAY: 429 / 3036 / 4006, until 00:00 UTC (exit 3)

What the runner does about a provider error is decided by its ``scope`` alone, and what a
budget stop means by its ``reason``, never by the wording of a message. Messages say what
happened and what to do. The API token never appears in any of them.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, ClassVar


class Scope(Enum):
    """How far a provider error reaches: what the runner does about it."""

    TRANSIENT = "transient"  # the same request may work later: retry with backoff
    ROW = "row"  # this input is bad: its rows fail, the run goes on
    RUN = "run"  # nothing in this run can work (auth, model): abort the run
    DAY = "day"  # the account has nothing left today: stop until 00:00 UTC


class BudgetStop(Enum):
    """Why the budget refused the next request."""

    DAY_CAP = "day_cap"  # the day's cap (ours, or Cloudflare's 3036) is reached: resumes at 00:00
    RUN_CAP = "run_cap"  # this run's --max-neurons is spent: the next run goes on
    CANNOT_FIT = "cannot_fit"  # one request costs more than a whole day or run allows


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
    """The neuron budget does not allow the next request; ``reason`` says which limit."""

    exit_code = 3

    def __init__(self, message: str, *, reason: BudgetStop = BudgetStop.DAY_CAP) -> None:
        super().__init__(message)
        self.reason = reason


class ProviderError(PipelinesError):
    """A model call failed; carries the HTTP status and Cloudflare error code."""

    retryable = False
    scope: ClassVar[Scope] = Scope.RUN
    # Whether the request may have been billed although it failed: the server may have run
    # it (a 5xx, a timeout after sending, a dropped or garbled answer). Counted as spent.
    maybe_billed: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        model: str | None = None,
        retry_after: float | None = None,
        maybe_billed: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.model = model
        self.retry_after = retry_after
        self.attempts = 0  # requests made before giving up (set by the runner)
        if maybe_billed is not None:
            self.maybe_billed = maybe_billed

    def attrs(self) -> dict[str, Any]:
        """Structured fields, for manifests and failure rows."""
        return {**super().attrs(), "status": self.status, "code": self.code, "model": self.model}


class TransientError(ProviderError):
    """Worth retrying after a pause."""

    retryable = True
    scope = Scope.TRANSIENT


class RateLimited(TransientError):
    """Per-minute request limit reached (3021): everybody slows down."""


class CapacityExceeded(TransientError):
    """Cloudflare is out of capacity (3040): back off and retry."""


class ServerError(TransientError):
    """5xx or a Cloudflare-side timeout."""

    maybe_billed = True  # whether failed requests are billed is undocumented: assume so


class TransportError(TransientError):
    """The request never got a well-formed answer (timeout, reset, garbage).

    ``maybe_billed`` unless the request certainly never left (connection refused)."""

    maybe_billed = True


class JsonModeUnmet(TransientError):
    """The model could not produce JSON that meets the requested schema. Cloudflare documents
    the words, not a code or a status; another try may well succeed, and the tokens it
    generated may have been billed."""

    maybe_billed = True


class TerminalError(ProviderError):
    """Retrying the same request cannot help."""


class InvalidInput(TerminalError):
    """The model refused this input; the rows in it fail, the run goes on."""

    exit_code = 1
    scope = Scope.ROW


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
    scope = Scope.DAY


class CredentialsError(JobError):
    """The API token (CLOUDFLARE_API_TOKEN or the file CLOUDFLARE_API_TOKEN_FILE names)
    cannot be read or cannot be a token; the message names the variable, never the value."""


class StateError(PipelinesError):
    """The state folder, or a database in it (ledger, cache), cannot be used (exit 2)."""

    exit_code = 2
