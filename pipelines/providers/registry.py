"""Providers by name, and the binding each one gives a run.

A *binding* owns everything that depends on the provider: its client, the label of who
really produces the results (``produced_by``: it keys the output's fingerprint and the result
cache, so a rehearsal's or a local model's answers never pass for Cloudflare's), the ledger
account its neurons count against, and the UTC day that account lives in. Nothing else
guesses any of these, least of all from an address.

``cloudflare`` calls the REST API. When the server at the base URL says it is the emulator
(it answers ``/__emulator/stats``; Cloudflare does not), the binding is the emulator's: made-up
results, its own ledger account and its emulated day. ``emulator`` starts one in-process on a
loopback port, with a throw-away ledger. ``local`` runs models on this machine's CPU.
``openai`` calls an OpenAI-compatible server: for a Workers AI model (Cloudflare's ``/ai/v1``,
an AI Gateway) its neurons count as ``cloudflare``'s do, or as the emulator's when the server
is one; a model outside the catalog counts in its job's own unit on an account of its own.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipelines.catalog.models import ModelInfo
from pipelines.core.errors import JobError
from pipelines.providers.base import OpenAISettings, Provider, ProviderSettings

EMULATOR = "emulator"
OPENAI = "openai"


@dataclass(frozen=True)
class ProviderChoice:
    """Which provider runs a job, decided once, without any network."""

    name: str  # a key of FACTORIES
    settings: ProviderSettings
    fallback_notice: str = ""  # said once when ``auto`` picked the local provider
    openai: OpenAISettings | None = None  # the server and key of provider ``openai``
    model: ModelInfo | None = None  # the job's model, when the binding depends on it


@dataclass
class Binding:
    """A provider ready for a run, with everything that depends on it."""

    name: str
    provider: Provider
    account: str  # the ledger account the run's neurons count against
    paid: bool  # whether the neurons are real Cloudflare neurons
    label: Callable[[ModelInfo], str]  # who really produces results for a model
    day: Callable[[], str] | None = None  # the account's day, when not the real UTC day
    ledger_path: Path | None = None  # None: the shared ledger in the state folder
    # whether Cloudflare's per-minute limits apply (local models are limited by the CPU)
    rate_limited: bool = True

    def produced_by(self, model: ModelInfo) -> str:
        return self.label(model)


Factory = Callable[[ProviderChoice, float], AbstractAsyncContextManager[Binding]]


def choose(
    job_provider: str,
    override: str | None,
    base_url: str | None,
    model: ModelInfo | None = None,
) -> ProviderChoice:
    """Resolve ``auto`` and read the settings: Cloudflare when the account and the token are
    both set, the local models when neither is; one without the other is an error. A model
    outside the catalog (``model``, the job's) runs on provider ``openai`` only."""
    name = override or job_provider
    if model is not None and model.budget_unit != "neurons" and name != OPENAI:
        raise JobError(
            f"{model.id} is not a Workers AI model: only provider openai runs it "
            f"(the job file says provider: openai; drop --provider {name})"
        )
    if name == OPENAI and model is not None and model.task not in ("embed", "generate"):
        # refused before any row is read (or any file made), not at the first request
        raise JobError(
            f"provider openai runs embedding and text-generation models only; {model.id} is "
            f"a {model.task} model: use --provider cloudflare (or --provider emulator to "
            "rehearse)"
        )
    if name == OPENAI:  # checks the URL and the key; Cloudflare's settings play no part
        found = OpenAISettings.from_env(base_url)
        return ProviderChoice(OPENAI, ProviderSettings(), openai=found, model=model)
    settings = ProviderSettings.from_env(base_url)  # checks the URL and the token
    if name not in FACTORIES and name != "auto":
        raise JobError(f"unknown provider {name!r}: choose one of auto, {', '.join(FACTORIES)}")
    if name != "auto":
        return ProviderChoice(name, settings)
    has_account, has_token = bool(settings.account_id), bool(settings.token)
    if has_account and has_token:
        return ProviderChoice("cloudflare", settings)
    if has_account or has_token:
        missing = "CLOUDFLARE_API_TOKEN" if has_account else "CLOUDFLARE_ACCOUNT_ID"
        present = "CLOUDFLARE_ACCOUNT_ID" if has_account else "CLOUDFLARE_API_TOKEN"
        raise JobError(
            f"{present} is set but {missing} is not: set both to use Cloudflare, or neither "
            "to use the local models (or pass --provider local / --provider emulator)"
        )
    notice = (
        "CLOUDFLARE_ACCOUNT_ID/CLOUDFLARE_API_TOKEN not set; using the local provider "
        "(use --provider emulator to rehearse against the emulator)"
    )
    return ProviderChoice("local", settings, fallback_notice=notice)


def expected_label(choice: ProviderChoice, model: ModelInfo) -> str:
    """Who will produce results, as far as can be known without any network (for ``plan``):
    a Cloudflare base URL that turns out to be an emulator is only known when a run opens it."""
    if choice.name == EMULATOR:
        return emulator_label(model)
    if choice.name == "local":
        from pipelines.providers.local import local_label

        return local_label(model)
    if choice.openai is not None and model.budget_unit != "neurons":
        from pipelines.providers.openai_wire import external_label

        return external_label(choice.openai.base_url, model)
    return model.id


def expected_account(choice: ProviderChoice, model: ModelInfo) -> str | None:
    """The ledger account a run will count against, as far as known without any network
    (for ``plan``); ``None``: the Cloudflare account of the environment."""
    if choice.openai is None:
        return None
    from pipelines.providers.openai_wire import cloudflare_account, external_account

    if model.budget_unit != "neurons":
        return external_account(choice.openai.base_url)
    return cloudflare_account(choice.openai.base_url)


def emulator_label(model: ModelInfo) -> str:
    return f"{EMULATOR}:{model.id}"


@asynccontextmanager
async def _cloudflare(choice: ProviderChoice, timeout_s: float) -> AsyncIterator[Binding]:
    from pipelines.providers.cloudflare import CloudflareProvider
    from pipelines.providers.emulator_day import probe_emulator

    settings = choice.settings
    async with CloudflareProvider(settings, timeout_s=timeout_s) as provider:
        day = await probe_emulator(settings.base_url)
        if day is None:
            account = settings.account_id or "default"
            yield Binding("cloudflare", provider, account, True, lambda m: m.id)
            return
        # An emulator answers: its neurons are made up, so they never count against the
        # account's real allowance, and its day is the one the ledger follows.
        async with day:
            account = f"{EMULATOR}@{day.origin}"
            yield Binding(EMULATOR, provider, account, False, emulator_label, day=day.today)


@asynccontextmanager
async def _emulator(choice: ProviderChoice, timeout_s: float) -> AsyncIterator[Binding]:
    from pipelines.emulator import EmulatorConfig, running_emulator
    from pipelines.providers.cloudflare import CloudflareProvider

    with running_emulator(EmulatorConfig()) as emu, _scratch() as tmp:
        rehearsal = ProviderSettings(emu.base_url, "emulator", "emulator")
        async with CloudflareProvider(rehearsal, timeout_s=timeout_s) as provider:
            # a rehearsal spends the emulator's neurons, never the account's
            yield Binding(
                EMULATOR,
                provider,
                EMULATOR,
                False,
                emulator_label,
                day=emu.day,
                ledger_path=tmp / "ledger.sqlite3",
            )


@asynccontextmanager
async def _local(choice: ProviderChoice, timeout_s: float) -> AsyncIterator[Binding]:
    from pipelines.providers.local import LocalProvider

    local = LocalProvider()
    async with local:
        # the provider's own label also checks the offline model is installed, so a missing
        # one stops the run before any row is read
        yield Binding("local", local, "local", False, local.produced_by, rate_limited=False)


@asynccontextmanager
async def _openai(choice: ProviderChoice, timeout_s: float) -> AsyncIterator[Binding]:
    from pipelines.providers.emulator_day import probe_emulator
    from pipelines.providers.openai import OpenAIProvider
    from pipelines.providers.openai_wire import (
        cloudflare_account,
        external_account,
        external_label,
    )

    if choice.openai is None:  # pragma: no cover - choose() always sets it
        raise JobError("provider openai was chosen without its settings")
    settings = choice.openai.require_key()
    base = settings.base_url
    async with OpenAIProvider(settings, timeout_s=timeout_s) as provider:
        model = choice.model
        if model is not None and model.budget_unit != "neurons":
            # tokens or requests of another server: an account of their own, never neurons
            account = external_account(base)
            yield Binding(OPENAI, provider, account, False, lambda m: external_label(base, m))
            return
        day = await probe_emulator(base)
        if day is None:  # Workers AI's /ai/v1 (or a gateway): the account's real neurons
            yield Binding(OPENAI, provider, cloudflare_account(base), True, lambda m: m.id)
            return
        async with day:  # an emulator behind /ai/v1: as for provider cloudflare
            account = f"{EMULATOR}@{day.origin}"
            yield Binding(EMULATOR, provider, account, False, emulator_label, day=day.today)


@contextmanager
def _scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pipelines-rehearsal-") as tmp:
        yield Path(tmp)


FACTORIES: dict[str, Factory] = {
    "cloudflare": _cloudflare,
    "emulator": _emulator,
    "local": _local,
    OPENAI: _openai,
}


def open_binding(choice: ProviderChoice, timeout_s: float) -> AbstractAsyncContextManager[Binding]:
    """The binding for ``choice``: ``async with open_binding(...) as binding``."""
    return FACTORIES[choice.name](choice, timeout_s)
