"""The API base URL (pipelines.core.urls): one check, wherever the URL comes from."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from pipelines.cli import main
from pipelines.core.errors import JobError
from pipelines.core.urls import (
    DEFAULT_BASE_URL,
    check_base_url,
    resolve_base_url,
    shown,
    url_problem,
)
from pipelines.emulator import EmulatorConfig, running_emulator
from pipelines.emulator.server import RunningEmulator
from pipelines.providers.base import ProviderSettings

BGE = "@cf/baai/bge-small-en-v1.5"
PASSWORD = "hunter2-Very-Secret"


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("https://api.cloudflare.com/client/v4/", "https://api.cloudflare.com/client/v4"),
        ("HTTP://127.0.0.1:8787/client/v4", "http://127.0.0.1:8787/client/v4"),
        ("http://[::1]:8787/client/v4", "http://[::1]:8787/client/v4"),
        (
            "https://gateway.ai.cloudflare.com/v1/acct/gw/workers-ai",
            "https://gateway.ai.cloudflare.com/v1/acct/gw/workers-ai",
        ),
        ("http://localhost", "http://localhost"),
    ],
)
def test_good_urls_come_back_normalised(url: str, normalised: str) -> None:
    assert url_problem(url) is None
    assert check_base_url(url, "test") == normalised


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://example.com", "http:// or https://"),
        ("example.com/client/v4", "http:// or https://"),
        ("http://", "no host name"),
        ("http://[::1/v4", "cannot be parsed"),
        ("http://127.0.0.1:99999/", "cannot be parsed"),
        ("http://127.0.0.1:abc/", "cannot be parsed"),
        ("http://127.0.0.1:0/", "port 0"),
        ("http://exa mple.com/", "whitespace"),
        ("http://example.com/\n", "whitespace"),
        ("http://example.com/\tv4", "whitespace"),
        ("http://exam\0ple.com/", "control character"),
        ("https://example.com/v4?x=1", "query"),
        ("https://example.com/v4#top", "fragment"),
        (f"https://user:{PASSWORD}@example.com/v4", "user name or password"),
        (f"https://{PASSWORD}@example.com/v4", "user name or password"),
        (f"https://:{PASSWORD}@example.com:443/v4", "user name or password"),
        (f"http://u:{PASSWORD}@[::1/v4", "user name or password"),  # malformed, still hidden
    ],
)
def test_bad_urls_are_one_clear_error_that_names_the_source(url: str, says: str) -> None:
    assert url_problem(url) is not None
    with pytest.raises(JobError) as info:
        check_base_url(url, "SOME_VARIABLE")
    message = info.value.message
    assert says in message and "SOME_VARIABLE" in message
    assert "\n" not in message and info.value.exit_code == 2
    assert PASSWORD not in message


def test_shown_hides_only_the_credentials() -> None:
    assert shown(f"https://me:{PASSWORD}@h.example/a@b") == "https://***@h.example/a@b"
    assert shown("https://h.example/path@x") == "https://h.example/path@x"
    assert shown("not a url") == "not a url"


def test_the_sdk_variable_is_read_and_ours_wins_when_both_differ() -> None:
    sdk, ours = "https://sdk.example/client/v4", "https://ours.example/client/v4"
    assert resolve_base_url(None, {}) == DEFAULT_BASE_URL
    assert resolve_base_url(None, {"CLOUDFLARE_BASE_URL": sdk + "/"}) == sdk
    both = {"CLOUDFLARE_BASE_URL": sdk, "CLOUDFLARE_API_BASE_URL": ours}
    assert resolve_base_url(None, both) == ours
    assert resolve_base_url("http://127.0.0.1:1/v4", both) == "http://127.0.0.1:1/v4"
    with pytest.raises(JobError, match="CLOUDFLARE_BASE_URL"):
        resolve_base_url(None, {"CLOUDFLARE_BASE_URL": "ftp://sdk.example"})


def test_provider_settings_take_the_checked_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDFLARE_BASE_URL", "https://sdk.example/client/v4/")
    assert ProviderSettings.from_env().base_url == "https://sdk.example/client/v4"
    monkeypatch.setenv("CLOUDFLARE_API_BASE_URL", f"https://u:{PASSWORD}@x.example/v4")
    with pytest.raises(JobError) as info:
        ProviderSettings.from_env()
    assert "CLOUDFLARE_API_BASE_URL" in info.value.message
    assert PASSWORD not in info.value.message


# -- through the command line --------------------------------------------------------------


@pytest.fixture(scope="module")
def emu() -> Iterator[RunningEmulator]:
    with running_emulator(EmulatorConfig(daily_neurons=1_000_000)) as emulator:
        yield emulator


def write_job(tmp: Path, base_url: str | None = None) -> Path:
    pl.DataFrame({"id": ["1", "2"], "text": ["a river", "a garden"]}).write_csv(tmp / "in.csv")
    job = tmp / "job.yaml"
    extra = f'base_url: "{base_url}"\n' if base_url else ""
    job.write_text(
        f"name: urls\nsource: {{kind: csv, path: in.csv, key: id}}\n"
        f'task: {{kind: embed, model: "{BGE}", input: text}}\n'
        f"output: {{path: out/result.parquet}}\n{extra}"
    )
    return job


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert isinstance(result.exception, SystemExit | None), result.exception
    return result.exit_code, result.stdout + result.stderr


def single_error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


def test_credentials_in_the_env_url_are_refused_without_echoing_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", "acct")
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "token-value")
    monkeypatch.setenv("CLOUDFLARE_API_BASE_URL", f"https://me:{PASSWORD}@api.example/v4")
    code, output = invoke("run", "--no-progress", str(write_job(tmp_path)))
    assert code == 2
    assert "CLOUDFLARE_API_BASE_URL" in single_error(output)
    assert PASSWORD not in output


def test_credentials_in_the_job_url_are_refused_without_echoing_them(tmp_path: Path) -> None:
    job = write_job(tmp_path, f"https://me:{PASSWORD}@api.example/v4")
    code, output = invoke("validate", str(job))  # validate lists located problems
    assert code == 2 and "base_url: must not contain a user name or password" in output
    assert PASSWORD not in output
    code, output = invoke("run", "--no-progress", str(job))
    assert code == 2 and "base_url" in single_error(output) and PASSWORD not in output


def test_a_run_follows_the_sdk_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emu: RunningEmulator
) -> None:
    emu.reset()
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", "acct")
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "token-value")
    monkeypatch.setenv("CLOUDFLARE_BASE_URL", emu.base_url)
    code, output = invoke("run", "--no-progress", str(write_job(tmp_path)))
    assert code == 0, output
    assert emu.stats()["models"][BGE]["items"] == 2


def test_ours_wins_over_the_sdk_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emu: RunningEmulator
) -> None:
    emu.reset()
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", "acct")
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "token-value")
    monkeypatch.setenv("CLOUDFLARE_API_BASE_URL", emu.base_url)
    monkeypatch.setenv("CLOUDFLARE_BASE_URL", "http://sdk-only.invalid/client/v4")
    code, output = invoke("run", "--no-progress", str(write_job(tmp_path)))
    assert code == 0, output
    assert emu.stats()["models"][BGE]["items"] == 2
