"""The API token (pipelines.core.secrets): read and checked once, never written anywhere,
in any form — logs, manifests, error lines and the failures file."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
import polars as pl
import pytest

from pipelines.catalog.models import get_model
from pipelines.core.errors import CredentialsError, JobError, TransportError
from pipelines.core.secrets import check_token, mask, read_token
from pipelines.job.load import load_job
from pipelines.ops.logs import configure_logging, redact, redact_value
from pipelines.ops.manifest import write_manifest
from pipelines.output.identity import Fingerprint
from pipelines.output.store import OutputStore
from pipelines.providers.base import ProviderSettings
from pipelines.providers.cloudflare import CloudflareProvider
from pipelines.run.report import RunReport, StopReason
from pipelines.tasks.base import RowFailure

BGE = "@cf/baai/bge-small-en-v1.5"
VALID = "Tok3nPartOne_Tok3nPartTwo-9f8e7d"
# Tokens no check would let through, but that the environment can still hold: masking must
# hide them too, whatever escaping a message applied.
HOSTILE = {
    "valid": VALID,
    "newline": "Tok3nPartOne\nTok3nPartTwo",
    "non-ascii": "Tok3nPartOne\u00e9Tok3nPartTwo",
    "quotes-and-backslash": "Tok3nPartOne'\"\\Tok3nPartTwo",
    "url-special": "Tok3nPartOne+/=&Tok3nPartTwo",
    "tab-and-bell": "Tok3nPartOne\t\x07Tok3nPartTwo",
}

# How text carries a string, written out here independently of the code under test.
ENCODINGS: dict[str, Callable[[str], str]] = {
    "raw": lambda t: t,
    "repr": repr,
    "json": json.dumps,
    "json-unicode": lambda t: json.dumps(t, ensure_ascii=False),
    "backslash": lambda t: t.encode("unicode_escape").decode(),
    "bytes-repr": lambda t: repr(("Bearer " + t).encode()),  # httpx: Illegal header value
    "percent": lambda t: quote(t, safe=""),
    "percent-lower": lambda t: re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(t)),
    "form": quote_plus,
    "json-in-json": lambda t: json.dumps(json.dumps(t)),
    "json-of-repr": lambda t: json.dumps(repr(t)),
}


def fragments(token: str) -> list[str]:
    """Pieces of the token that must not survive anywhere (its letter-and-digit runs)."""
    return list(re.findall(r"[A-Za-z0-9_-]{6,}", token))


def assert_hidden(text: str, token: str) -> None:
    for name, encode in ENCODINGS.items():
        assert encode(token) not in text, name
    for part in fragments(token):
        assert part not in text, (part, text)


@pytest.fixture(autouse=True)
def _restore_logger() -> Iterator[None]:
    logger = logging.getLogger("pipelines")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


# -- reading the token ---------------------------------------------------------------------


def test_the_env_token_wins_and_surrounding_whitespace_goes(tmp_path: Path) -> None:
    file = tmp_path / "token"
    file.write_text("from-the-file-1234\n")
    env = {"CLOUDFLARE_API_TOKEN": f"  {VALID}\n", "CLOUDFLARE_API_TOKEN_FILE": str(file)}
    assert read_token(env) == VALID
    assert read_token({"CLOUDFLARE_API_TOKEN_FILE": str(file)}) == "from-the-file-1234"
    file.write_bytes(b"\r\n  crlf-token-5678 \r\n")
    assert read_token({"CLOUDFLARE_API_TOKEN_FILE": str(file)}) == "crlf-token-5678"
    assert read_token({}) == ""
    assert read_token({"CLOUDFLARE_API_TOKEN": "   "}) == ""


def _missing(tmp: Path) -> Path:
    return tmp / "nowhere"


def _folder(tmp: Path) -> Path:
    (tmp / "a-folder").mkdir()
    return tmp / "a-folder"


def _not_utf8(tmp: Path) -> Path:
    (tmp / "latin1").write_bytes(b"Secr\xe9tContent9876")
    return tmp / "latin1"


def _empty(tmp: Path) -> Path:
    (tmp / "empty").write_text("\n\n")
    return tmp / "empty"


def _fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "fifo")  # reading it would hang
    return tmp / "fifo"


def _two_lines(tmp: Path) -> Path:
    (tmp / "two").write_text("SecretContent9876\nSecondLine5432\n")
    return tmp / "two"


def _unreadable(tmp: Path) -> Path:
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    (tmp / "locked").write_text("SecretContent9876")
    (tmp / "locked").chmod(0)
    return tmp / "locked"


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (_missing, "no such file"),
        (_folder, "is a folder"),
        (_not_utf8, "not UTF-8"),
        (_empty, "is empty"),
        (_fifo, "not a regular file"),
        (_two_lines, "line break"),
        (_unreadable, "cannot be read"),
    ],
    ids=["missing", "folder", "not-utf8", "empty", "fifo", "two-lines", "unreadable"],
)
def test_a_bad_token_file_is_one_error_naming_the_variable_and_path_not_the_content(
    tmp_path: Path, make: Callable[[Path], Path], says: str
) -> None:
    path = make(tmp_path)
    with pytest.raises(CredentialsError) as info:
        read_token({"CLOUDFLARE_API_TOKEN_FILE": str(path)})
    message = info.value.message
    assert says in message and f"CLOUDFLARE_API_TOKEN_FILE={path}" in message
    assert "\n" not in message and info.value.exit_code == 2
    assert isinstance(info.value, JobError)
    for content in ("Secr", "Content9876", "SecondLine", "\\xe9"):
        assert content not in message


@pytest.mark.parametrize("name", [n for n in HOSTILE if n != "valid"])
def test_a_token_that_cannot_be_a_header_is_refused_without_echoing_it(name: str) -> None:
    token = HOSTILE[name]
    if name in ("quotes-and-backslash", "url-special"):
        assert check_token(token, "X") == token  # odd, but printable ASCII: sendable
        return
    with pytest.raises(CredentialsError) as info:
        read_token({"CLOUDFLARE_API_TOKEN": token})
    assert "CLOUDFLARE_API_TOKEN" in info.value.message and "character 13" in info.value.message
    assert_hidden(info.value.message, token)


def test_provider_settings_read_the_checked_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "t").write_text(VALID + "\n")
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN_FILE", str(tmp_path / "t"))
    assert ProviderSettings.from_env().token == VALID
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", HOSTILE["newline"])
    with pytest.raises(CredentialsError):
        ProviderSettings.from_env()
    with pytest.raises(CredentialsError):  # settings made by hand are checked too
        CloudflareProvider(ProviderSettings("http://127.0.0.1:1", "acct", HOSTILE["non-ascii"]))


# -- the command line ----------------------------------------------------------------------


def write_job(tmp: Path) -> Path:
    pl.DataFrame({"id": ["1", "2"], "text": ["a river", "a garden"]}).write_csv(tmp / "in.csv")
    job = tmp / "job.yaml"
    job.write_text(
        f"name: secrets\nsource: {{kind: csv, path: in.csv, key: id}}\n"
        f'task: {{kind: embed, model: "{BGE}", input: text}}\n'
        "output: {path: out/result.parquet}\n"
    )
    return job


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CLOUDFLARE_API_TOKEN", HOSTILE["newline"]),
        ("CLOUDFLARE_API_TOKEN", HOSTILE["non-ascii"]),
        ("CLOUDFLARE_API_TOKEN_FILE", "missing-token-file"),
    ],
    ids=["newline-token", "non-ascii-token", "missing-token-file"],
)
def test_the_run_stops_before_any_row_with_one_error_line(
    tmp_path: Path, variable: str, value: str
) -> None:
    job = write_job(tmp_path)
    env = {**os.environ, "CLOUDFLARE_ACCOUNT_ID": "acct", variable: value}
    env["CLOUDFLARE_API_BASE_URL"] = "http://127.0.0.1:9/client/v4"  # never reached
    done = subprocess.run(
        [sys.executable, "-m", "pipelines", "run", "--no-progress", str(job)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in output, output
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and variable in errors[0], output
    out = tmp_path / "out"
    assert not (out / "result.parquet").exists()  # no row was tried, so no failures file
    assert not (out / "result.failures.parquet").exists()
    if variable == "CLOUDFLARE_API_TOKEN":
        assert_hidden(output, value)


# -- masking: logs, manifests, failures ----------------------------------------------------


def planted(token: str) -> list[str]:
    return [f"{name}: {encode(token)}" for name, encode in ENCODINGS.items()]


@pytest.mark.parametrize("name", list(HOSTILE))
def test_mask_hides_every_form(name: str) -> None:
    token = HOSTILE[name]
    for text in planted(token):
        assert_hidden(mask(text, [token]), token)
    assert mask("nothing secret here", [token]) == "nothing secret here"


@pytest.mark.parametrize("name", list(HOSTILE))
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_log_record_carries_the_token_in_any_form(
    name: str, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = HOSTILE[name]
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", token)
    out = io.StringIO()
    configure_logging(fmt, "INFO", stream=out)  # type: ignore[arg-type]
    log = logging.getLogger("pipelines.test")
    for text in planted(token):
        log.info(text)
        log.warning("arg %s", text, extra={"detail": {"k": [text]}, "job": "secrets"})
        try:
            raise TransportError(text)
        except TransportError:
            log.exception("failed")
    assert_hidden(out.getvalue(), token)


def test_the_token_file_is_a_source_of_secrets_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "t").write_text(HOSTILE["newline"] + "\n")
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN_FILE", str(tmp_path / "t"))
    for text in planted(HOSTILE["newline"]):
        assert_hidden(redact(text), HOSTILE["newline"])
        assert_hidden(json.dumps(redact_value({"a": [text]})), HOSTILE["newline"])


@pytest.mark.parametrize("name", ["valid", "newline", "quotes-and-backslash", "url-special"])
def test_no_manifest_carries_the_token_in_any_form(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = HOSTILE[name]
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", token)
    job = load_job(write_job(tmp_path))
    report = RunReport(
        job=job.name,
        run_id="r1",
        stop_reason=StopReason.ABORTED,
        message=" | ".join(planted(token)),
    )
    now = datetime(2026, 11, 28, tzinfo=UTC)
    path = write_manifest(
        job,
        report,
        started_at=now,
        ended_at=now,
        provider="cloudflare",
        extra={"x": planted(token)},
    )
    assert_hidden(path.read_text(encoding="utf-8"), token)


@pytest.mark.parametrize("name", ["valid", "newline", "non-ascii", "url-special"])
def test_the_failures_file_never_carries_the_token(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow as pa

    token = HOSTILE[name]
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", token)
    store = OutputStore(tmp_path / "out.parquet", fingerprint=Fingerprint({"job": "j"}), meta={})
    store.open(fresh=True)
    store.begin("run1", pa.schema([pa.field("_key", pa.string())]))
    failures = [
        RowFailure(key=str(i), error="TransportError", message=text)
        for i, text in enumerate(planted(token))
    ]
    store.write_failures(failures)
    store.finalize()
    messages = pl.read_parquet(store.failures_path)["message"].to_list()
    assert len(messages) == len(failures)
    assert_hidden("\n".join(messages), token)


def _raising(exc: Exception) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    "make",
    [
        lambda t: httpx.LocalProtocolError(f"Illegal header value {('Bearer ' + t).encode()!r}"),
        lambda t: httpx.ConnectError(f"refused for /x?token={quote(t, safe='')}"),
        lambda t: httpx.ReadError(f"reset: {json.dumps({'auth': t})}"),
    ],
    ids=["header-repr", "percent", "json"],
)
def test_provider_errors_built_from_httpx_never_carry_the_token(
    make: Callable[[str], Exception],
) -> None:
    token = HOSTILE["url-special"]
    settings = ProviderSettings("http://127.0.0.1:1/client/v4", "acct", token)

    async def call() -> None:
        provider = CloudflareProvider(settings, transport=_raising(make(token)))
        try:
            await provider.run(get_model(BGE), {"text": ["hello"]})
        finally:
            await provider.aclose()

    with pytest.raises(TransportError) as info:
        asyncio.run(call())
    assert_hidden(info.value.message, token)
    assert_hidden(str(info.value), token)


def test_helpers_used_here_really_find_a_leak() -> None:
    token = HOSTILE["newline"]
    for text in planted(token):
        with pytest.raises(AssertionError):
            assert_hidden(text, token)
