"""Who produced a result comes from the provider binding, never from an address: an emulator
reached as ``http://0.0.0.0:PORT`` (or any address) says what it is, so its answers are
labelled the emulator's in the output and the result cache, count against an account of
their own, and a later real run can never be served them."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipelines.cli import main
from pipelines.core.state import state_dir
from pipelines.emulator.server import RunningEmulator
from pipelines.providers.base import ProviderSettings
from pipelines.providers.registry import ProviderChoice, choose, open_binding

SMALL = "@cf/baai/bge-small-en-v1.5"


def job_file(tmp: Path) -> Path:
    pl.DataFrame({"id": ["1", "2"], "text": ["alpha beta", "gamma delta"]}).write_csv(
        tmp / "in.csv"
    )
    path = tmp / "job.yaml"
    path.write_text(
        f"""name: who
source: {{kind: csv, path: in.csv, key: id}}
task: {{kind: embed, model: "{SMALL}", input: text}}
output: {{path: out.parquet}}
"""
    )
    return path


def test_an_emulator_at_any_address_is_labelled_the_emulators(
    tmp_path: Path, emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    unspecified = emu.base_url.replace("127.0.0.1", "0.0.0.0")  # not a loopback address
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", "real-account")
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "tok")
    monkeypatch.setenv("CLOUDFLARE_API_BASE_URL", unspecified)
    result = CliRunner().invoke(main, ["run", "--no-progress", str(job_file(tmp_path))])
    assert result.exit_code == 0, result.output
    meta = pq.read_schema(tmp_path / "out.parquet").metadata
    assert meta[b"pipelines.produced_by"] == f"emulator:{SMALL}".encode()
    with sqlite3.connect(state_dir() / "cache.sqlite3") as db:
        scopes = {row[0] for row in db.execute("SELECT scope FROM results")}
    assert scopes and all(f'"by": "emulator:{SMALL}"' in s for s in scopes), scopes
    with sqlite3.connect(state_dir() / "ledger.sqlite3") as db:
        accounts = {row[0] for row in db.execute("SELECT account FROM usage")}
    assert accounts == {f"emulator@{unspecified.split('/client')[0]}"}  # never the real one


def test_a_server_that_is_not_the_emulator_gets_cloudflares_label(tmp_path: Path) -> None:
    # nothing answers /__emulator/stats there: the binding stays Cloudflare's (no request
    # to any model is made here, so the dead port costs nothing)
    settings = ProviderSettings("http://127.0.0.1:9/client/v4", "acct", "tok")

    async def open_it() -> tuple[str, str, bool]:
        async with open_binding(ProviderChoice("cloudflare", settings), 5.0) as binding:
            from pipelines.catalog.models import get_model

            return binding.name, binding.produced_by(get_model(SMALL)), binding.paid

    assert asyncio.run(open_it()) == ("cloudflare", SMALL, True)


def test_auto_with_one_credential_but_not_the_other_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", "acct")
    result = CliRunner().invoke(main, ["run", "--no-progress", str(job_file(tmp_path))])
    assert result.exit_code == 2
    assert "CLOUDFLARE_API_TOKEN is not" in result.output
    assert not (tmp_path / "out.parquet").exists()
    monkeypatch.delenv("CLOUDFLARE_ACCOUNT_ID")
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "tok")
    with pytest.raises(Exception, match="CLOUDFLARE_ACCOUNT_ID is not"):
        choose("auto", None, None)
