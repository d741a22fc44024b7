"""``provider: openai`` end to end through the CLI: embed and generate jobs against the
emulator's ``/ai/v1`` endpoints (billed as the emulator metered, on the emulator's account),
the key and base URL required before any row is read, the key in no file or line even
when the server echoes it, and a model outside the catalog capped by its job in requests
(or tokens) a day: it stops for the day and goes on after 00:00 UTC."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipelines.budget import clock
from pipelines.cli import main
from pipelines.core.state import state_dir
from pipelines.emulator import RunningEmulator
from pipelines.emulator.server import bind, make_server
from pipelines.job.load import load_jobs
from pipelines.ops.jobset import arun_jobs
from pipelines.run.settings import RunSettings

KEY = "sk-proj-Zq8Very5ecretOpenAIKey-0123456789"
BGE = "@cf/baai/bge-small-en-v1.5"
LLAMA = "@cf/meta/llama-3.1-8b-instruct-fp8"  # answers in Cloudflare's classic shape
QWEN = "@cf/qwen/qwen3-30b-a3b-fp8"  # answers a chat.completion

pytestmark = pytest.mark.emulator(rpm_scale=100)


def v1(emu: RunningEmulator) -> str:
    return f"{emu.base_url}/accounts/acct/ai/v1"


@pytest.fixture
def openai_env(emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> RunningEmulator:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", v1(emu))
    return emu


def write_rows(folder: Path, n: int) -> None:
    topics = ["the moon", "rivers", "winter light", "old maps", "the sea"]
    pl.DataFrame(
        {"id": [str(i) for i in range(n)], "text": [f"{topics[i % 5]} {i}" for i in range(n)]}
    ).write_csv(folder / "in.csv")


def job(folder: Path, task: str, extra: str = "", rows: int = 6) -> Path:
    write_rows(folder, rows)
    path = folder / "job.yaml"
    path.write_text(
        f"""name: oa
provider: openai
source: {{kind: csv, path: in.csv, key: id}}
task:
{task}
output: {{path: out.parquet, keep: [id]}}
{extra if "limits:" in extra else extra + "limits: {requests_per_minute: 100000}"}
"""
    )
    return path


def embed_task(model: str) -> str:
    return f'  kind: embed\n  model: "{model}"\n  input: text\n'


def generate_task(model: str, schema: bool = True) -> str:
    lines = f'  kind: generate\n  model: "{model}"\n  prompt: "Facts about {{{{ text }}}}"\n'
    lines += "  params: {max_tokens: 80, seed: 4}\n"
    if schema:
        lines += (
            "  output_schema: {type: object, properties: {facts: {type: array, items: "
            "{type: string}}}, required: [facts], additionalProperties: false}\n"
        )
    return lines


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def ledger_rows() -> list[tuple[str, str, float]]:
    with sqlite3.connect(state_dir() / "ledger.sqlite3") as db:
        return list(db.execute("SELECT account, model, neurons FROM usage"))


# -- catalog models through the emulator's /ai/v1 ----------------------------------------


def test_an_embed_job_runs_on_ai_v1_billed_as_the_emulator_metered(
    tmp_path: Path, openai_env: RunningEmulator
) -> None:
    emu = openai_env
    path = job(tmp_path, embed_task(BGE))
    code, out = invoke("plan", "--json", str(path))
    assert code == 0, out
    planned = json.loads(out)
    code, out = invoke("run", "--no-progress", str(path))
    assert code == 0, out
    stats = emu.stats()["models"][BGE]  # what the run cost, before anything else is asked
    assert stats["requests"] == planned["requests"] == 1
    manifest = json.loads((tmp_path / "out.manifest.json").read_text())["last_run"]
    assert manifest["neurons"] == pytest.approx(stats["neurons"]) and stats["neurons"] > 0
    assert manifest["provider"] == "emulator" and manifest["paid"] is False
    (row,) = ledger_rows()
    origin = emu.base_url.split("/client")[0]
    assert row[0] == f"emulator@{origin}" and row[2] == pytest.approx(stats["neurons"])
    frame = pl.read_parquet(tmp_path / "out.parquet").sort("id", descending=False)
    texts = pl.read_csv(tmp_path / "in.csv", schema_overrides={"id": pl.String}).sort("id")
    native = httpx.post(  # the same texts on /ai/run: the very same vectors
        f"{emu.base_url}/accounts/acct/ai/run/{BGE}",
        json={"text": texts["text"].to_list()},
        headers={"Authorization": f"Bearer {KEY}"},
    ).json()["result"]["data"]
    got = np.array(frame["embedding"].to_list(), dtype=np.float32)
    np.testing.assert_array_equal(got, np.array(native, dtype=np.float32))
    meta = pq.read_schema(tmp_path / "out.parquet").metadata
    assert meta[b"pipelines.produced_by"] == f"emulator:{BGE}".encode()


@pytest.mark.parametrize("model", [LLAMA, QWEN])
def test_a_generate_job_runs_on_ai_v1_billed_as_the_emulator_metered(
    tmp_path: Path, openai_env: RunningEmulator, model: str
) -> None:
    emu = openai_env
    path = job(tmp_path, generate_task(model), rows=4)
    code, out = invoke("run", "--no-progress", str(path))
    assert code == 0, out
    frame = pl.read_parquet(tmp_path / "out.parquet")
    assert frame.height == 4
    assert all(isinstance(f, list) and f for f in frame["facts"].to_list())
    assert set(frame["finish_reason"].to_list()) == {"stop"}
    stats = emu.stats()["models"][model]
    assert stats["requests"] == 4
    assert frame["prompt_tokens"].sum() == stats["input_tokens"]
    assert frame["completion_tokens"].sum() == stats["output_tokens"]
    manifest = json.loads((tmp_path / "out.manifest.json").read_text())["last_run"]
    assert manifest["neurons"] == pytest.approx(stats["neurons"])


def test_a_cut_off_answer_is_marked_truncated(tmp_path: Path, openai_env: RunningEmulator) -> None:
    path = job(tmp_path, generate_task(LLAMA, schema=False).replace("80", "3"), rows=2)
    code, out = invoke("run", "--no-progress", str(path))
    assert code == 0, out
    frame = pl.read_parquet(tmp_path / "out.parquet")
    assert frame["truncated"].to_list() == [True, True]
    assert set(frame["finish_reason"].to_list()) == {"length"}
    assert "cut off at max_tokens 2" in out


# -- settings: the key and the base URL --------------------------------------------------


@pytest.mark.parametrize("missing", ["OPENAI_API_KEY", "OPENAI_BASE_URL"])
def test_a_missing_key_or_base_url_is_one_error_before_any_row(
    tmp_path: Path, openai_env: RunningEmulator, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    monkeypatch.delenv(missing)
    code, out = invoke("run", "--no-progress", str(job(tmp_path, embed_task(BGE))))
    assert code == 2, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and missing in errors[0], out
    assert "Traceback" not in out and KEY not in out
    assert not (tmp_path / "out.parquet").exists()
    assert openai_env.stats()["requests_total"] == 0


def test_the_key_comes_from_its_file_and_base_url_precedence_is_cli_job_env(
    tmp_path: Path, openai_env: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    (tmp_path / "key").write_text(KEY + "\n")
    monkeypatch.setenv("OPENAI_API_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # never reached
    path = job(tmp_path, embed_task(BGE), extra=f"base_url: {v1(openai_env)}\n")
    code, out = invoke("run", "--no-progress", str(path))  # the job's beats the env's
    assert code == 0, out
    text = path.read_text().replace(v1(openai_env), "http://127.0.0.1:9/v1")
    path.write_text(text.replace("out.parquet", "again.parquet"))
    code, out = invoke("run", "--no-progress", "--base-url", v1(openai_env), str(path))
    assert code == 0, out  # the command line's beats the job's
    assert pl.read_parquet(tmp_path / "again.parquet").height == 6
    (tmp_path / "key").write_text("two words\n")
    code, out = invoke("run", "--no-progress", str(path))
    assert code == 2 and "OPENAI_API_KEY_FILE" in out and "two words" not in out


# -- the key in nothing written, even echoed by the server -------------------------------


@contextmanager
def serving(app: Starlette) -> Iterator[str]:
    """``app`` on a free loopback port, in a thread, as the emulator is served."""
    sock = bind()
    ready = threading.Event()
    server = make_server(app, on_ready=ready.set)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


class Proxy:
    """An OpenAI-compatible server for models outside the catalog: it answers with the
    emulator's models (``gpt-test-embed`` is bge-small, ``gpt-test-chat`` qwen3) and can echo
    the key it was sent in its refusals, as a careless server might."""

    ALIASES: ClassVar[dict[str, str]] = {"gpt-test-embed": BGE, "gpt-test-chat": QWEN}

    def __init__(self, emu: RunningEmulator) -> None:
        self.target = v1(emu)
        self.requests = 0
        self.echo_for = "ECHO"  # a text holding this gets a 400 quoting the key
        self.refuse_all = False  # every request gets a 401 quoting the key
        self.app = Starlette(
            routes=[
                Route("/v1/embeddings", self.forward, methods=["POST"]),
                Route("/v1/chat/completions", self.forward, methods=["POST"]),
            ]
        )

    async def forward(self, request: Request) -> Response:
        self.requests += 1
        body: dict[str, Any] = json.loads(await request.body())
        said = request.headers.get("authorization", "")
        if self.refuse_all:
            return JSONResponse({"error": {"message": f"bad key {said}", "type": "x"}}, 401)
        if self.echo_for in json.dumps(body):
            return JSONResponse({"error": {"message": f"refused for {said!r}", "type": "x"}}, 400)
        asked = body["model"]
        body["model"] = self.ALIASES[asked]
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                self.target + request.url.path.removeprefix("/v1"),
                json=body,
                headers={"Authorization": said},
            )
        data = answer.json()
        if isinstance(data, dict) and "model" in data:
            data["model"] = asked
        return JSONResponse(data, answer.status_code)


@pytest.fixture
def proxy(openai_env: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxy]:
    found = Proxy(openai_env)
    with serving(found.app) as base:
        monkeypatch.setenv("OPENAI_BASE_URL", base)
        yield found


def test_the_key_is_in_no_output_failure_manifest_or_log_line(tmp_path: Path, proxy: Proxy) -> None:
    path = job(tmp_path, embed_task("gpt-test-embed"), extra="budget: {daily_tokens: 100000}\n")
    frame = pl.read_csv(tmp_path / "in.csv", schema_overrides={"id": pl.String})
    frame.with_columns(
        pl.when(pl.col("id") == "2").then(pl.lit("ECHO me")).otherwise(pl.col("text")).alias("text")
    ).write_csv(tmp_path / "in.csv")
    code, out = invoke("run", "--no-progress", "--log-format", "json", str(path))
    assert code == 1, out  # one row failed, as bad input, with the server's words
    failures = pl.read_parquet(tmp_path / "out.failures.parquet")
    assert failures["_key"].to_list() == ["2"] and "***" in failures["message"][0]
    proxy.refuse_all = True
    code, more = invoke("run", "--no-progress", "--retry-failed", str(path))
    assert code == 2 and "refused the API key" in more, more
    written = [
        out,
        more,
        *(p.read_bytes().decode("utf-8", "replace") for p in tmp_path.rglob("*") if p.is_file()),
        *(p.read_bytes().decode("utf-8", "replace") for p in state_dir().rglob("*") if p.is_file()),
        # Parquet compresses its pages: read the tables back too
        *(str(pl.read_parquet(p).to_dicts()) for p in tmp_path.rglob("*.parquet")),
    ]
    assert any("failures" in p.name for p in tmp_path.rglob("*.parquet"))
    for text in written:
        assert KEY not in text and KEY[8:-8] not in text


# -- models outside the catalog: the job's own daily cap ----------------------------------


def test_a_request_cap_stops_after_five_requests_and_resumes_the_next_day(
    tmp_path: Path, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    today = clock.utc_today()
    monkeypatch.setattr(clock, "utc_today", lambda: today)
    extra = "budget: {daily_requests: 5}\nlimits: {requests_per_minute: 100000, batch_size: 2}\n"
    path = job(tmp_path, embed_task("gpt-test-embed"), extra=extra, rows=20)
    code, out = invoke("plan", str(path))
    assert code == 0, out
    assert "requests   10\n" in out and "days       2.00 at 5 requests a day" in out, out
    code, out = invoke("run", "--no-progress", str(path))
    assert code == 3, out
    assert "daily request cap reached" in out and "resumes after 00:00 UTC" in out
    assert proxy.requests == 5
    assert pl.read_parquet(tmp_path / "out.parquet").height == 10
    (row,) = {(a, m) for a, m, _ in ledger_rows()}
    host = os.environ["OPENAI_BASE_URL"].split("//")[1].split("/")[0]
    assert row == (f"openai@{host}", "gpt-test-embed")
    code, out = invoke("run", "--no-progress", str(path))  # the same day: nothing more
    assert code == 3 and proxy.requests == 5, out
    monkeypatch.setattr(clock, "utc_today", lambda: clock.shift_day(today, 1))
    code, out = invoke("run", "--no-progress", str(path))
    assert code == 0, out
    assert proxy.requests == 10
    frame = pl.read_parquet(tmp_path / "out.parquet")
    assert frame.height == 20 and frame["id"].n_unique() == 20
    assert {len(v) for v in frame["embedding"].to_list()} == {384}  # the width answered
    meta = pq.read_schema(tmp_path / "out.parquet").metadata
    assert meta[b"pipelines.produced_by"].startswith(b"openai@127.0.0.1:")
    manifest = json.loads((tmp_path / "out.manifest.json").read_text())["last_run"]
    assert manifest["unit"] == "requests" and manifest["paid"] is False


def test_wait_sleeps_through_the_nights_of_a_request_cap(
    tmp_path: Path, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    days = [clock.utc_today()]
    monkeypatch.setattr(clock, "utc_today", lambda: days[-1])
    extra = "budget: {daily_requests: 2}\nlimits: {requests_per_minute: 100000, batch_size: 3}\n"
    path = job(tmp_path, embed_task("gpt-test-embed"), extra=extra, rows=15)

    async def next_night(_: float) -> None:
        days.append(clock.shift_day(days[-1], 1))

    reports = asyncio.run(arun_jobs(load_jobs([path]), RunSettings(wait=True), sleep=next_night))
    assert reports[0].status == "completed", reports
    assert len(days) == 3 and proxy.requests == 5  # 2 + 2 + 1 requests over three days


def test_a_token_cap_counts_what_the_server_reports(tmp_path: Path, proxy: Proxy) -> None:
    path = job(
        tmp_path, generate_task("gpt-test-chat"), extra="budget: {daily_tokens: 5000}\n", rows=3
    )
    code, out = invoke("run", "--no-progress", str(path))
    assert code == 0, out
    frame = pl.read_parquet(tmp_path / "out.parquet")
    reported = frame["prompt_tokens"].sum() + frame["completion_tokens"].sum()
    (row,) = ledger_rows()
    assert row[1] == "gpt-test-chat" and row[2] == pytest.approx(reported)


def test_a_model_outside_the_catalog_runs_on_provider_openai_only(
    tmp_path: Path, proxy: Proxy
) -> None:
    path = job(tmp_path, embed_task("gpt-test-embed"), extra="budget: {daily_tokens: 100000}\n")
    code, out = invoke("run", "--no-progress", "--provider", "cloudflare", str(path))
    assert code == 2 and "only provider openai runs it" in out, out
    assert proxy.requests == 0


def test_provider_openai_on_the_command_line_overrides_the_jobs(
    tmp_path: Path, openai_env: RunningEmulator
) -> None:
    path = job(tmp_path, embed_task(BGE))
    path.write_text(path.read_text().replace("provider: openai", "provider: cloudflare"))
    code, out = invoke("plan", "--provider", "openai", "--json", str(path))
    assert code == 0 and json.loads(out)["requests"] == 1, out
    code, out = invoke("run", "--no-progress", "--provider", "openai", str(path))
    assert code == 0, out
    assert openai_env.stats()["models"][BGE]["requests"] == 1
    assert json.loads((tmp_path / "out.manifest.json").read_text())["last_run"]["requests"] == 1
