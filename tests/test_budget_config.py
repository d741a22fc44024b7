"""Budget settings: job file keys > global config file > defaults; --max-neurons > job."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.budget import EffectiveBudget, effective_budget, resolve_account
from pipelines.budget.config import config_path, load_global_budget
from pipelines.core.errors import JobError
from pipelines.job.spec import BudgetSpec


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config.yaml"
    monkeypatch.setenv("PIPELINES_CONFIG", str(path))
    return path


def test_defaults_without_any_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No PIPELINES_CONFIG: the platform's config dir, which has no file here.
    monkeypatch.delenv("PIPELINES_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_path().name == "config.yaml"
    assert effective_budget(None, None) == EffectiveBudget(10_000, 0, None)
    assert effective_budget(BudgetSpec(), None) == EffectiveBudget(10_000, 0, None)


def test_global_config_beats_defaults(config: Path) -> None:
    config.write_text("budget:\n  daily_neurons: 8000\n  reserve: 500\n", encoding="utf-8")
    assert effective_budget(None, None) == EffectiveBudget(8_000, 500, None)
    # A job that leaves the keys out takes the global ones, though BudgetSpec has defaults.
    assert effective_budget(BudgetSpec(max_neurons=300), None) == EffectiveBudget(8_000, 500, 300)


def test_job_keys_set_explicitly_beat_the_global_config(config: Path) -> None:
    config.write_text("budget: {daily_neurons: 8000, reserve: 500}\n", encoding="utf-8")
    job = BudgetSpec.model_validate({"reserve": 0})
    assert effective_budget(job, None) == EffectiveBudget(8_000, 0, None)
    job = BudgetSpec.model_validate({"daily_neurons": 10_000})
    assert effective_budget(job, None) == EffectiveBudget(10_000, 500, None)


def test_cli_max_neurons_beats_the_job(config: Path) -> None:
    job = BudgetSpec(max_neurons=300)
    assert effective_budget(job, 120).max_neurons == 120
    assert effective_budget(job, None).max_neurons == 300
    assert effective_budget(None, 50).max_neurons == 50
    with pytest.raises(JobError, match="--max-neurons"):
        effective_budget(job, 0)


def test_partial_and_foreign_sections(config: Path) -> None:
    config.write_text("provider: {base_url: x}\nbudget:\n  reserve: 100\n", encoding="utf-8")
    assert effective_budget(None, None) == EffectiveBudget(10_000, 100, None)
    config.write_text("", encoding="utf-8")
    assert load_global_budget().daily_neurons is None


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("budget: {daily_neurons: 0}\n", "budget.daily_neurons"),
        ("budget: {reserve: -1}\n", "budget.reserve"),
        ("budget: {daily_neurns: 5}\n", "budget.daily_neurns"),
        ("budget: {daily_neurons: lots}\n", "budget.daily_neurons"),
        ("budget: [1, 2]\n", "budget"),
        ("- just a list\n", "must be a mapping"),
        ("budget: {daily_neurons: 5\n", "invalid YAML"),
    ],
)
def test_config_errors_name_the_file(config: Path, text: str, needle: str) -> None:
    config.write_text(text, encoding="utf-8")
    with pytest.raises(JobError) as err:
        effective_budget(None, None)
    assert str(config) in err.value.message
    assert needle in err.value.message
    assert err.value.exit_code == 2


def test_missing_config_file_means_defaults(config: Path) -> None:
    assert not config.exists()
    assert effective_budget(None, None) == EffectiveBudget(10_000, 0, None)


def test_config_path_that_is_a_folder_is_an_error(config: Path) -> None:
    config.mkdir()
    with pytest.raises(JobError, match="not a regular file"):
        effective_budget(None, None)


def test_reserve_must_leave_something(config: Path) -> None:
    config.write_text("budget: {daily_neurons: 1000, reserve: 1000}\n", encoding="utf-8")
    with pytest.raises(JobError, match="leaves nothing"):
        effective_budget(None, None)
    assert effective_budget(BudgetSpec.model_validate({"reserve": 10}), None).reserve == 10


def test_account_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_account() == "default"
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", "abc123")
    assert resolve_account() == "abc123"
    assert resolve_account("explicit") == "explicit"
