"""Issue 11: a wrong answer is never stored. A 200 whose body breaks the model's published
output schema (a null translation or label, a vector of the wrong length, NaN or Infinity in a
vector) fails its rows as retryable: nothing reaches the output, nothing the result cache,
and the next run sends the rows again.

The answers come from a loopback HTTP server standing in for Cloudflare, so the run goes
through the CLI, the real provider, its JSON decoding and the runner as a user's would."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import soundfile as sf
from click.testing import CliRunner

from pipelines.budget import Ledger
from pipelines.cli import main
from pipelines.run.cache import ResultCache

BGE = "@cf/baai/bge-small-en-v1.5"
SST = "@cf/huggingface/distilbert-sst-2-int8"
M2M = "@cf/meta/m2m100-1.2b"
WHISPER = "@cf/openai/whisper"
TEXTS = ["one small text", "another text", "a third text"]

Answer = Callable[[str, dict[str, Any]], str]  # (model, request body) -> JSON of the result


class Cloudflare:
    """A loopback server answering every ``/ai/run/<model>`` call with ``answer``."""

    def __init__(self) -> None:
        self.answer: Answer = good
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                # whisper takes the audio as the raw body
                is_json = self.headers["Content-Type"] == "application/json"
                body = json.loads(raw) if is_json else {"audio": raw}
                model = self.path.split("/ai/run/", 1)[1]
                owner.requests += 1
                payload = (
                    f'{{"success": true, "errors": [], "result": {owner.answer(model, body)}}}'
                )
                data = payload.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/client/v4"


def good(model: str, body: dict[str, Any]) -> str:
    if model == BGE:
        return json.dumps({"shape": [len(body["text"]), 384], "data": [[0.25] * 384] * 3})
    if model == WHISPER:
        return json.dumps(
            {"text": "hello there", "words": [{"word": "hello", "start": 0.1, "end": 0.5}]}
        )
    if model == SST:
        return json.dumps(
            [{"label": "POSITIVE", "score": 0.9}, {"label": "NEGATIVE", "score": 0.1}]
        )
    return json.dumps({"translated_text": "bonjour"})


def vectors(value: str, dim: int = 384) -> Answer:
    """Three vectors of ``dim`` numbers, the last one of the first vector being ``value``."""
    row = ", ".join(["0.5"] * (dim - 1))
    return lambda model, body: (
        f'{{"shape": [3, {dim}], "data": [[{row}, {value}], [{row}, 0.5], [{row}, 0.5]]}}'
    )


BAD: dict[str, tuple[str, Answer]] = {
    "null translation": (M2M, lambda model, body: '{"translated_text": null}'),
    "no translation": (M2M, lambda model, body: '{"text": "bonjour"}'),
    "null label": (SST, lambda model, body: '[{"label": null, "score": 0.9}]'),
    "no classes": (SST, lambda model, body: "[]"),
    "NaN score": (SST, lambda model, body: '[{"label": "POSITIVE", "score": NaN}]'),
    "vector too short": (BGE, vectors("0.5", dim=383)),
    "NaN in a vector": (BGE, vectors("NaN")),
    "Infinity in a vector": (BGE, vectors("Infinity")),
    "null in a vector": (BGE, vectors("null")),
    "text in a vector": (BGE, vectors('"0.5"')),
    "too few vectors": (BGE, lambda model, body: json.dumps({"data": [[0.5] * 384]})),
}


@pytest.fixture
def cloudflare(monkeypatch: pytest.MonkeyPatch) -> Iterator[Cloudflare]:
    fake = Cloudflare()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", "acct")
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "tok")
    monkeypatch.setenv("CLOUDFLARE_API_BASE_URL", fake.url)
    with Ledger(account="acct") as ledger:  # a paid run on a new ledger needs today known
        ledger.assume_unused()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


def write_job(tmp: Path, model: str) -> Path:
    pl.DataFrame({"id": ["a", "b", "c"], "text": TEXTS}).write_csv(tmp / "in.csv")
    kind = {BGE: "embed", SST: "classify", M2M: "translate"}[model]
    params = "{source_lang: en, target_lang: fr}" if model == M2M else "{}"
    job = tmp / "job.yaml"
    job.write_text(
        f"""name: answers
source: {{kind: csv, path: in.csv, key: id}}
task: {{kind: {kind}, model: "{model}", input: text, params: {params}}}
output: {{path: out.parquet}}
limits: {{max_attempts: 1}}
"""
    )
    return job


def run(job: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["run", "--no-progress", str(job)])
    return result.exit_code, result.output


def cached_entries(tmp: Path) -> int:
    with ResultCache(tmp / "state" / "cache.sqlite3") as cache:
        return int(cache.stats()["entries"])


@pytest.mark.parametrize("case", sorted(BAD))
def test_an_answer_outside_the_schema_fails_its_rows_as_retryable(
    case: str, tmp_path: Path, cloudflare: Cloudflare
) -> None:
    model, answer = BAD[case]
    job = write_job(tmp_path, model)
    cloudflare.answer = answer
    code, out = run(job)
    assert code == 1, out
    failures = pl.read_parquet(tmp_path / "out.failures.parquet")
    assert sorted(failures["_key"].to_list()) == ["a", "b", "c"]
    assert failures["retryable"].to_list() == [True] * 3
    assert set(failures["error"].to_list()) == {"TransportError"}
    assert all("output schema" in m for m in failures["message"].to_list()), failures
    output = tmp_path / "out.parquet"
    assert not output.exists() or pl.read_parquet(output).height == 0
    assert cached_entries(tmp_path) == 0

    cloudflare.answer = good  # the next run sends the rows again and keeps the answers
    sent = cloudflare.requests
    code, out = run(job)
    assert code == 0, out
    assert cloudflare.requests > sent
    assert sorted(pl.read_parquet(output)["_key"].to_list()) == ["a", "b", "c"]
    assert not pl.read_parquet(tmp_path / "out.failures.parquet").height
    assert cached_entries(tmp_path) == 3


TRANSCRIPTS: dict[str, Answer] = {
    "null transcript": lambda model, body: '{"text": null}',
    "no transcript": lambda model, body: '{"vtt": "WEBVTT"}',
    "a word starting at a text": lambda model, body: (
        '{"text": "hi", "words": [{"word": "hi", "start": "zero", "end": 1.0}]}'
    ),
}


@pytest.mark.parametrize("case", sorted(TRANSCRIPTS))
def test_a_bad_transcript_is_neither_stored_nor_written_as_subtitles(
    case: str, tmp_path: Path, cloudflare: Cloudflare
) -> None:
    (tmp_path / "audio").mkdir()
    rate = 16_000
    sf.write(tmp_path / "audio/a.wav", np.zeros(rate, dtype="float32"), rate)
    job = tmp_path / "job.yaml"
    job.write_text(
        f"""name: transcripts
source: {{kind: audio, path: audio}}
task: {{kind: transcribe, model: "{WHISPER}"}}
output: {{path: out.parquet, vtt: true, srt: true}}
limits: {{max_attempts: 1}}
"""
    )
    cloudflare.answer = TRANSCRIPTS[case]
    code, out = run(job)
    assert code == 1, out
    failures = pl.read_parquet(tmp_path / "out.failures.parquet")
    assert failures.select("_key", "error", "retryable").rows() == [
        ("a.wav", "TransportError", True)
    ]
    assert (
        not (tmp_path / "out.parquet").exists()
        or not pl.read_parquet(tmp_path / "out.parquet").height
    )
    subtitles = tmp_path / "out.subtitles"
    assert not subtitles.exists() or not list(subtitles.rglob("*"))

    cloudflare.answer = good
    code, out = run(job)
    assert code == 0, out
    assert pl.read_parquet(tmp_path / "out.parquet")["text"].to_list() == ["hello there"]
    assert (subtitles / "a.wav.vtt").read_text().startswith("WEBVTT")
    assert (subtitles / "a.wav.srt").read_text().startswith("1\n00:00:00,100 --> ")
