"""Log lines in text and JSON, and the API token masked in every record."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.ops.logs import configure_logging, redact, redact_value

TOKEN = "cf-token-9f8e7d6c5b4a3210"


@pytest.fixture(autouse=True)
def _restore_logger() -> Iterator[None]:
    logger = logging.getLogger("pipelines")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


def _log(fmt: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", TOKEN)
    out = io.StringIO()
    configure_logging(fmt, "INFO", stream=out)  # type: ignore[arg-type]
    log = logging.getLogger("pipelines.run.runner")
    log.info(
        "sent with Bearer %s",
        TOKEN,
        extra={"job": "embed-corpus", "run_id": "r1", "headers": {"Authorization": TOKEN}},
    )
    try:
        raise RuntimeError(f"boom {TOKEN}")
    except RuntimeError:
        log.exception("failed for %s", "embed-corpus", extra={"job": "embed-corpus"})
    log.debug("not shown")
    return out.getvalue()


def test_text_lines_are_readable_and_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _log("text", monkeypatch)
    assert TOKEN not in text
    first = text.splitlines()[0]
    # 2026-11-28 09:12:03 embed-corpus: message
    assert first[19:] == " embed-corpus: sent with Bearer ***"
    assert first[4] == "-" and first[13] == ":"
    assert "embed-corpus: error: failed for embed-corpus" in text
    assert "RuntimeError: boom ***" in text
    assert "not shown" not in text


def test_json_lines_carry_fields_and_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _log("json", monkeypatch)
    assert TOKEN not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert len(lines) == 2
    first = lines[0]
    assert first["msg"] == "sent with Bearer ***"
    assert first["level"] == "info"
    assert first["logger"] == "pipelines.run.runner"
    assert first["job"] == "embed-corpus" and first["run_id"] == "r1"
    assert first["headers"] == {"Authorization": "***"}
    assert first["ts"].endswith("Z")
    assert lines[1]["level"] == "error" and "boom ***" in lines[1]["exc"]


def test_configure_is_idempotent_and_checks_the_format() -> None:
    out = io.StringIO()
    configure_logging("text", stream=out)
    configure_logging("text", stream=out)
    logging.getLogger("pipelines").info("once")
    assert out.getvalue().count("once") == 1
    with pytest.raises(ValueError):
        configure_logging("xml", stream=out)  # type: ignore[arg-type]


def test_redact_env_token_and_token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert redact(f"x {TOKEN} y") == f"x {TOKEN} y"  # nothing set: nothing to hide
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", TOKEN)
    assert redact(f"x {TOKEN} y {TOKEN}") == "x *** y ***"
    monkeypatch.delenv("CLOUDFLARE_API_TOKEN")
    token_file = tmp_path / "token"
    token_file.write_text("file-held-secret-123\n")
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN_FILE", str(token_file))
    assert redact("Bearer file-held-secret-123") == "Bearer ***"
    assert redact_value({"a": ["file-held-secret-123", 3]}) == {"a": ["***", 3]}


def test_bad_format_arguments_never_raise_and_stay_redacted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", TOKEN)
    out = io.StringIO()
    configure_logging("text", stream=out)
    logging.getLogger("pipelines").info("two %s %s", TOKEN)
    assert TOKEN not in out.getvalue() and "two %s %s ('***',)" in out.getvalue()
