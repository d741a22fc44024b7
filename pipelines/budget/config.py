"""Where budget state lives and which budget applies to a run.

Precedence for the daily cap and the reserve: keys set explicitly in the job file, then the
global config file (``$PIPELINES_CONFIG`` or ``<user config dir>/config.yaml``), then the
defaults (10,000 / 0). ``--max-neurons`` beats the job's ``budget.max_neurons``. A job that
caps a model outside the catalog in tokens or requests (``budget.daily_tokens`` /
``daily_requests``) works under that cap alone: the global file's neurons do not apply, and
its ``reserve`` and ``max_neurons`` count in that unit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from pydantic import BaseModel, ConfigDict, Field

from pipelines.core.errors import JobError
from pipelines.core.secrets import LEDGER_URL_VAR
from pipelines.core.state import state_dir
from pipelines.job.problems import Problems
from pipelines.job.shape import validate_all
from pipelines.job.spec import BudgetSpec
from pipelines.job.yamldoc import compose, read_text, walk

LEDGER_FILE = "ledger.sqlite3"
CONFIG_FILE = "config.yaml"


def default_ledger_path() -> Path:
    """Where the ledger lives unless told otherwise (the state folder is not checked)."""
    return state_dir() / LEDGER_FILE


def ledger_url() -> str | None:
    """The shared ledger's database: ``$PIPELINES_LEDGER_URL``, else the global config's
    ``budget.ledger_url``, else None (the SQLite file in the state folder)."""
    env = os.environ.get(LEDGER_URL_VAR, "").strip()
    if env:
        return env
    return load_global_budget().ledger_url


def resolve_account(explicit: str | None = None) -> str:
    """The account the ledger keys on: given, else ``CLOUDFLARE_ACCOUNT_ID``, else default."""
    return explicit or os.environ.get("CLOUDFLARE_ACCOUNT_ID") or "default"


def config_path() -> Path:
    """``$PIPELINES_CONFIG``, else ``config.yaml`` in the platform's user config folder."""
    env = os.environ.get("PIPELINES_CONFIG")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_config_dir("pipelines")) / CONFIG_FILE


class GlobalBudget(BaseModel):
    """The ``budget:`` section of the global config file; unset keys are ``None``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    daily_neurons: int | None = Field(default=None, gt=0)
    reserve: int | None = Field(default=None, ge=0)
    # the shared ledger (issue 17): postgresql://user:password@host:port/db
    ledger_url: str | None = None


class _GlobalConfig(BaseModel):
    # Other top-level sections belong to other features; only ``budget`` is checked here.
    model_config = ConfigDict(extra="allow", frozen=True)

    budget: GlobalBudget = Field(default_factory=GlobalBudget)


def load_global_budget(path: Path | None = None) -> GlobalBudget:
    """The global ``budget:`` settings; empty when there is no config file (it is optional).

    Problems are reported like a job file's: every one at once, as ``FILE:LINE: key: message``,
    with the closest known key for a misspelt one."""
    path = path if path is not None else config_path()
    if not path.exists():
        return GlobalBudget()
    if not path.is_file():
        raise JobError(f"{path}: the config file is not a regular file")
    shown = str(path)
    data, node = compose(read_text(path, shown, what="config file"), shown)
    if data is None or node is None:
        return GlobalBudget()
    if not isinstance(data, dict):
        raise JobError(
            f"{shown}:{node.start_mark.line + 1}: the config file must be a mapping "
            "(e.g. `budget: {daily_neurons: 10000}`)"
        )
    problems = Problems(file=shown)
    walk(node, problems)
    config = validate_all(_GlobalConfig, data, problems)
    problems.raise_if_any()
    if config is None:
        raise AssertionError("unreachable: validation failed without problems")
    return config.budget


@dataclass(frozen=True)
class EffectiveBudget:
    """The budget one run works under."""

    daily_neurons: int
    reserve: int
    max_neurons: int | None


def effective_budget(
    job_budget: BudgetSpec | None,
    cli_max_neurons: int | None,
    *,
    config_file: Path | None = None,
) -> EffectiveBudget:
    """Merge the job's ``budget:``, the global config and ``--max-neurons``."""
    defaults = BudgetSpec()
    glob = load_global_budget(config_file)  # read (and checked) whatever the job caps
    explicit = job_budget.model_fields_set if job_budget is not None else set()

    own = job_budget.external_cap() if job_budget is not None else None
    if job_budget is not None and own is not None:
        glob = GlobalBudget()  # its figures are neurons; this cap counts tokens or requests
        explicit = explicit | {"daily_neurons"}
        job_budget = job_budget.model_copy(update={"daily_neurons": own[1]})

    if job_budget is not None and "daily_neurons" in explicit:
        daily = job_budget.daily_neurons
    else:
        daily = glob.daily_neurons if glob.daily_neurons is not None else defaults.daily_neurons

    if job_budget is not None and "reserve" in explicit:
        reserve = job_budget.reserve
    else:
        reserve = glob.reserve if glob.reserve is not None else defaults.reserve

    if cli_max_neurons is not None and cli_max_neurons <= 0:
        raise JobError(f"--max-neurons must be a positive number, not {cli_max_neurons}")
    max_neurons = cli_max_neurons
    if max_neurons is None and job_budget is not None:
        max_neurons = job_budget.max_neurons

    if reserve >= daily:
        raise JobError(
            f"budget.reserve ({reserve:,}) leaves nothing of budget.daily_neurons ({daily:,}); "
            "lower the reserve or raise the cap"
        )
    return EffectiveBudget(daily_neurons=daily, reserve=reserve, max_neurons=max_neurons)
