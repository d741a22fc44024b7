"""Job files naming a model outside the catalog: allowed only with ``provider: openai`` in the
file, for embed and generate jobs, capped by exactly one of ``budget.daily_tokens`` and
``budget.daily_requests`` (never by neurons); catalog models refuse those caps. The resolver
gives every layer the same model, and the budget a run works under."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pipelines.budget import effective_budget
from pipelines.catalog.metering import Usage, neurons
from pipelines.core.errors import JobError
from pipelines.job.load import load_job
from pipelines.job.models import job_model

BASE = """\
name: ext
provider: openai
source: {kind: csv, path: data.csv}
task:
  kind: embed
  model: text-embedding-3-small
  input: text
output: {path: out.parquet}
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "data.csv").write_text("text\nhello\n")
    path = tmp_path / "job.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(JobError) as info:
        load_job(write(tmp_path, text))
    return [line.split(": ", 2)[2] for line in info.value.message.splitlines()]


def test_a_request_cap_makes_a_model_priced_per_request(tmp_path: Path) -> None:
    job = load_job(write(tmp_path, BASE + "budget: {daily_requests: 5, reserve: 1}\n"))
    model = job_model(job)
    assert (model.id, model.task, model.budget_unit) == (
        "text-embedding-3-small",
        "embed",
        "requests",
    )
    assert model.dimensions is None and model.tokenizer == "generic"
    assert neurons(model, Usage(input_tokens=10_000, requests=3)) == 3
    budget = effective_budget(job.budget, None)
    assert (budget.daily_neurons, budget.reserve) == (5, 1)


def test_a_token_cap_makes_one_neuron_one_token(tmp_path: Path) -> None:
    text = BASE.replace("kind: embed", "kind: generate").replace("  input: text\n", "")
    text = text.replace("text-embedding-3-small", "gpt-4o-mini")
    text = text.replace("output:", '  prompt: "Say {{ text }}"\noutput:')
    job = load_job(write(tmp_path, text + "budget: {daily_tokens: 20000}\n"))
    model = job_model(job)
    assert model.budget_unit == "tokens" and model.request_form == "chat"
    assert neurons(model, Usage(input_tokens=7, output_tokens=5, requests=1)) == 12
    # the global file's neurons never apply to a cap in tokens
    (tmp_path / "config.yaml").write_text("budget: {daily_neurons: 99, reserve: 10}\n")
    budget = effective_budget(job.budget, None, config_file=tmp_path / "config.yaml")
    assert (budget.daily_neurons, budget.reserve) == (20000, 0)


def test_a_model_outside_the_catalog_needs_exactly_one_cap(tmp_path: Path) -> None:
    (missing,) = problems(tmp_path, BASE)
    assert "budget.daily_tokens" in missing and "budget.daily_requests" in missing
    both = problems(tmp_path, BASE + "budget: {daily_tokens: 5, daily_requests: 5}\n")
    assert both == ["give daily_tokens or daily_requests, not both"]
    neurons_too = problems(tmp_path, BASE + "budget: {daily_tokens: 5, daily_neurons: 5}\n")
    assert len(neurons_too) == 1 and "not priced in neurons" in neurons_too[0]
    reserve = problems(tmp_path, BASE + "budget: {daily_requests: 5, reserve: 5}\n")
    assert reserve == ["must be below budget.daily_requests"]


def test_a_model_outside_the_catalog_needs_provider_openai_in_the_file(tmp_path: Path) -> None:
    for provider in ("auto", "cloudflare"):
        text = BASE.replace("provider: openai", f"provider: {provider}")
        (line,) = problems(tmp_path, text + "budget: {daily_requests: 5}\n")
        assert line.startswith("unknown model 'text-embedding-3-small'")


def test_workers_ai_ids_and_other_kinds_stay_in_the_catalog(tmp_path: Path) -> None:
    text = BASE.replace("text-embedding-3-small", '"@cf/baai/bge-smol"')
    (line,) = problems(tmp_path, text + "budget: {daily_requests: 5}\n")
    assert line.startswith("unknown model '@cf/baai/bge-smol'")
    text = BASE.replace("kind: embed", "kind: classify")
    (line,) = problems(tmp_path, text + "budget: {daily_requests: 5}\n")
    assert "embed and generate jobs only" in line


def test_catalog_models_refuse_caps_in_tokens_or_requests(tmp_path: Path) -> None:
    text = BASE.replace("text-embedding-3-small", '"@cf/baai/bge-small-en-v1.5"')
    (line,) = problems(tmp_path, text + "budget: {daily_tokens: 5}\n")
    assert "cap it with budget.daily_neurons" in line
    load_job(write(tmp_path, text))  # provider openai with a catalog model: neurons, as ever


def test_options_of_a_model_outside_the_catalog_are_openais(tmp_path: Path) -> None:
    text = BASE.replace("  input: text\n", "  input: text\n  params: {dimensions: 256}\n")
    load_job(write(tmp_path, text + "budget: {daily_requests: 5}\n"))
    text = BASE.replace("  input: text\n", "  input: text\n  params: {pooling: cls}\n")
    (line,) = problems(tmp_path, text + "budget: {daily_requests: 5}\n")
    assert line.startswith("not an option of text-embedding-3-small")
    text = BASE.replace("  input: text\n", "  input: text\n  truncate: true\n")
    (line,) = problems(tmp_path, text + "budget: {daily_requests: 5}\n")
    assert "cannot be cut" in line


@pytest.mark.parametrize("key", ["api_key", "openai_api_key", "OPENAI_API_KEY", "authorization"])
def test_no_key_field_gets_into_a_job(tmp_path: Path, key: str) -> None:
    text = BASE.replace("  input: text\n", f"  input: text\n  params: {{{key}: sk-abc123}}\n")
    found = problems(tmp_path, text + "budget: {daily_requests: 5}\n")
    assert any("OPENAI_API_KEY" in line for line in found), found
    assert not any("sk-abc123" in line for line in found)
