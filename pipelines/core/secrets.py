"""API tokens and keys: read once, checked, and masked wherever text leaves the process.

:func:`read_token` reads ``CLOUDFLARE_API_TOKEN``, else the file ``CLOUDFLARE_API_TOKEN_FILE``
names (:func:`read_openai_key` likewise ``OPENAI_API_KEY`` / ``OPENAI_API_KEY_FILE``, the key
of the ``openai`` provider), and refuses what cannot be a token (a missing, unreadable or
non-UTF-8 file, a control character, whitespace or a non-ASCII character inside) with a
:class:`~pipelines.core.errors.CredentialsError` that names the variable and the file but
never their content. A token that got through anyway would otherwise surface escaped in
an error message (``Illegal header value b'Bearer abc\\ndef'``), so :func:`mask` hides the
token in every form text usually carries it: as is, ``repr``-, JSON-, backslash- and
percent-escaped, and escaped twice.
"""

from __future__ import annotations

import functools
import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from urllib.parse import quote, quote_plus, unquote, urlsplit

from pipelines.core.errors import CredentialsError

TOKEN_VAR = "CLOUDFLARE_API_TOKEN"
TOKEN_FILE_VAR = "CLOUDFLARE_API_TOKEN_FILE"
OPENAI_KEY_VAR = "OPENAI_API_KEY"
OPENAI_KEY_FILE_VAR = "OPENAI_API_KEY_FILE"
# Every (value, file) pair of variables whose secret is masked in everything written.
SECRET_VARS = ((TOKEN_VAR, TOKEN_FILE_VAR), (OPENAI_KEY_VAR, OPENAI_KEY_FILE_VAR))
# Object-storage secrets (s3:// paths) are masked the same way; they have no file variable.
STORAGE_SECRET_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
MASK = "***"
# Shorter values are not real tokens; masking them would garble every line they occur in.
MIN_SECRET = 4
# The shared ledger's database URL (issue 17): its password is a secret like the token.
LEDGER_URL_VAR = "PIPELINES_LEDGER_URL"
# Cloudflare tokens are 40 characters; a file this large holds something else.
_MAX_TOKEN_FILE = 64 * 1024
_FIX = "copy the token again: API tokens and keys are one word of ASCII letters and digits"


def check_token(token: str, where: str) -> str:
    """``token`` when it can be sent in an HTTP header; else :class:`CredentialsError`
    saying where it came from (``where``) and what is wrong, without the token."""
    for position, ch in enumerate(token, start=1):
        if ch.isspace():
            what = "a line break" if ch in "\r\n" else "whitespace"
        elif not ch.isascii():
            what = "a non-ASCII character"
        elif not ch.isprintable():
            what = "a control character"
        else:
            continue
        raise CredentialsError(
            f"{where} has {what} inside the token (character {position}); {_FIX}"
        )
    return token


def _read_token_file(path: str, file_var: str = TOKEN_FILE_VAR) -> str:
    where = f"{file_var}={path}"
    try:
        file = Path(path).expanduser()
        info = file.stat()
        if stat.S_ISDIR(info.st_mode):
            raise CredentialsError(f"{where} is a folder; name the file that holds the token")
        if not stat.S_ISREG(info.st_mode):
            raise CredentialsError(f"{where} is not a regular file; write the token in a file")
        with open(file, "rb") as fh:
            raw = fh.read(_MAX_TOKEN_FILE + 1)
    except FileNotFoundError:
        raise CredentialsError(f"{where}: no such file; write the token in it") from None
    except (OSError, ValueError, RuntimeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise CredentialsError(
            f"{where} cannot be read ({reason}); make it readable by this user"
        ) from None
    if len(raw) > _MAX_TOKEN_FILE:
        raise CredentialsError(f"{where} is too large to hold a token; name the token's file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:  # its message quotes the bytes: never shown
        raise CredentialsError(f"{where} is not UTF-8 text; write the token alone in it") from None
    token = text.strip()  # a file ending in a newline is normal
    if not token:
        raise CredentialsError(f"{where} is empty; write the token in it")
    return check_token(token, where)


def read_token(environ: Mapping[str, str] | None = None) -> str:
    """The API token, checked: ``CLOUDFLARE_API_TOKEN``, else the file that
    ``CLOUDFLARE_API_TOKEN_FILE`` names; ``""`` when neither is set.

    Surrounding whitespace is dropped; anything else wrong is a :class:`CredentialsError`.
    """
    return _read_secret(TOKEN_VAR, TOKEN_FILE_VAR, environ)


def read_openai_key(environ: Mapping[str, str] | None = None) -> str:
    """The ``openai`` provider's API key, checked as :func:`read_token` checks the token:
    ``OPENAI_API_KEY``, else the file that ``OPENAI_API_KEY_FILE`` names; ``""`` when
    neither is set."""
    return _read_secret(OPENAI_KEY_VAR, OPENAI_KEY_FILE_VAR, environ)


def _read_secret(var: str, file_var: str, environ: Mapping[str, str] | None) -> str:
    env = os.environ if environ is None else environ
    token = env.get(var, "").strip()
    if token:
        return check_token(token, var)
    path = env.get(file_var, "")
    return _read_token_file(path, file_var) if path else ""


# -- masking -------------------------------------------------------------------------------

_file_cache: dict[str, tuple[tuple[int, int], str]] = {}


def _file_secret(path: str) -> str:
    """The token file's content for masking: never raises, never refuses."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            return ""
        version = (info.st_mtime_ns, info.st_size)
        cached = _file_cache.get(path)
        if cached is not None and cached[0] == version:
            return cached[1]
        with open(path, "rb") as fh:
            value = fh.read(_MAX_TOKEN_FILE).decode("utf-8", "replace").strip()
    except (OSError, ValueError):
        return ""
    _file_cache[path] = (version, value)
    return value


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Every value that must never be written (the Cloudflare token and the OpenAI key,
    from the environment or their files, and the AWS secret key and session token), valid
    or not, longest first."""
    env = os.environ if environ is None else environ
    found: set[str] = set()
    for var, file_var in SECRET_VARS:
        raw = env.get(var, "")
        found |= {raw, raw.strip()}
        path = env.get(file_var)
        if path:
            found.add(_file_secret(path))
    for var in STORAGE_SECRET_VARS:
        found.add(env.get(var, "").strip())
    found.add(url_password(env.get(LEDGER_URL_VAR, "")))
    return sorted((s for s in found if len(s) >= MIN_SECRET), key=len, reverse=True)


def url_password(url: str) -> str:
    """The password in a database URL (``postgresql://user:PASSWORD@host/db``), or ""."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return ""
    return unquote(password) if password else ""


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages."""
    password = url_password(url)
    return mask(url, [password]) if password else url


_PERCENT = re.compile(r"%[0-9A-F]{2}")
_ESCAPES: tuple[Callable[[str], str], ...] = (
    lambda s: repr(s)[1:-1],
    lambda s: json.dumps(s)[1:-1],
    lambda s: json.dumps(s, ensure_ascii=False)[1:-1],
    lambda s: s.encode("unicode_escape").decode("ascii"),
    lambda s: repr(s.encode("utf-8", "surrogatepass"))[2:-1],  # how bytes print
    lambda s: quote(s, safe=""),
    lambda s: quote(s, safe="/"),
    lambda s: quote_plus(s),
)


@functools.lru_cache(maxsize=64)
def secret_forms(secret: str) -> tuple[str, ...]:
    """``secret`` as text may carry it: as is, escaped once and escaped twice (a JSON
    string inside a repr, ...), longest first."""
    once = {secret} | {escape(secret) for escape in _ESCAPES}
    twice = {escape(form) for form in once for escape in _ESCAPES}
    forms = once | twice
    forms |= {_PERCENT.sub(lambda m: m.group(0).lower(), f) for f in forms}  # %2b and %2B
    return tuple(sorted((f for f in forms if len(f) >= MIN_SECRET), key=len, reverse=True))


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every form of every secret replaced by ``***``."""
    forms = sorted({f for s in secrets if s for f in secret_forms(s)}, key=len, reverse=True)
    for form in forms:
        if form in text:
            text = text.replace(form, MASK)
    return text
