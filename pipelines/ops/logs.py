"""Log lines for people or machines, with the API token scrubbed from every record.

``configure_logging("text")`` writes ``2026-11-28 09:12:03 embed-corpus: message`` (UTC);
``configure_logging("json")`` writes one JSON object per line (``ts``, ``level``,
``logger``, ``msg`` and any ``extra=`` fields such as ``job`` or ``run_id``). Both pass
through :class:`RedactFilter`, which masks the record itself, so records that propagate on
to the root logger's handlers are masked too; :func:`redact` is what manifests use.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any, Literal

from pipelines.core.secrets import mask, secret_values

LOGGER = "pipelines"
LogFormat = Literal["text", "json"]

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RESERVED = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
    | {"message", "asctime", "taskName"}
)


def secrets() -> list[str]:
    """The values that must never be written: the API token, from the env or its file."""
    return secret_values()


def redact(text: str) -> str:
    """``text`` with the API token, in any escaped form, replaced by ``***``."""
    found = secret_values()
    return mask(text, found) if found else text


def redact_value(value: Any) -> Any:
    """:func:`redact` applied to every string inside dicts, lists and tuples."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


class RedactFilter(logging.Filter):
    """Masks the API token in a record's message, arguments and extra fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not secrets():
            return True
        # Format once here so a token passed as an argument is masked too.
        try:
            record.msg = redact(record.getMessage())
            record.args = None
        except Exception:  # bad format arguments: keep them readable, never raise here
            record.msg = redact(f"{record.msg} {record.args!r}")
            record.args = None
        for key, value in list(vars(record).items()):
            if key not in _RESERVED:
                setattr(record, key, redact_value(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")}


def _utc(record: logging.LogRecord) -> datetime:
    return datetime.fromtimestamp(record.created, UTC)


class TextFormatter(logging.Formatter):
    """``2026-11-28 09:12:03 embed-corpus: stopped by the budget`` (UTC, job when known)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = _utc(record).strftime("%Y-%m-%d %H:%M:%S")
        who = getattr(record, "job", None) or record.name
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        line = f"{ts} {who}: {level}{record.getMessage()}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        return redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg`` and extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _utc(record).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            out.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        return redact(json.dumps(redact_value(out), default=str, ensure_ascii=False))


class _BarAwareHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each line above an open progress bar, never glued onto it: while a tqdm bar
    is shown, lines go through ``tqdm.write``, which clears the bar, prints and redraws it."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm = getattr(sys.modules.get("tqdm"), "tqdm", None)  # loaded only if a bar is used
        if tqdm is None or not getattr(tqdm, "_instances", None):
            super().emit(record)
            return
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # a log line must never break the run
            self.handleError(record)


class _StderrHandler(_BarAwareHandler):
    """Writes to whatever ``sys.stderr`` is at the time (CLI test runners swap it)."""

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass


def configure_logging(
    fmt: LogFormat = "text", level: int | str = logging.INFO, *, stream: IO[str] | None = None
) -> logging.Logger:
    """Send the ``pipelines`` logger to ``stream`` (default stderr) in ``fmt``; idempotent."""
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', not {fmt!r}")
    logger = logging.getLogger(LOGGER)
    for old in [h for h in logger.handlers if getattr(h, "_pipelines", False)]:
        logger.removeHandler(old)
    handler: logging.StreamHandler = (  # type: ignore[type-arg]
        _BarAwareHandler(stream) if stream is not None else _StderrHandler()
    )
    handler._pipelines = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    # On the handler, not the logger: logger filters skip records from child loggers.
    handler.addFilter(RedactFilter())
    logger.addHandler(handler)
    logger.setLevel(level.upper() if isinstance(level, str) else level)
    return logger
