"""The API base URL: where it comes from, whether it can be one, and whether it is local.

One check for every way a base URL arrives (``--base-url``, a job's ``base_url``,
``CLOUDFLARE_API_BASE_URL``, the official SDK's ``CLOUDFLARE_BASE_URL``, or for the
``openai`` provider ``OPENAI_BASE_URL``): an http(s) URL
with a host, a valid port, no whitespace, no query or fragment, and no credentials — a
``user:pass@`` in a URL would end up in logs, so it is refused, and no message repeats it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from pipelines.core.errors import JobError

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
# Ours first: when both are set, CLOUDFLARE_API_BASE_URL wins.
BASE_URL_VARS = ("CLOUDFLARE_API_BASE_URL", "CLOUDFLARE_BASE_URL")
# The official OpenAI SDK's variable; the ``openai`` provider has no default server.
OPENAI_BASE_URL_VAR = "OPENAI_BASE_URL"
_EXAMPLE = "https://api.cloudflare.com/client/v4"


def _authority(url: str) -> tuple[int, int] | None:
    """Start and end of the ``user@host:port`` part of ``url``, when it has one."""
    start = url.find("://")
    if start < 0:
        return None
    start += 3
    ends = [i for i in (url.find(c, start) for c in "/?#") if i >= 0]
    return start, min(ends, default=len(url))


def shown(url: str) -> str:
    """``url`` fit for a message: any ``user:password@`` is replaced by ``***@``."""
    span = _authority(url)
    if span is None:
        return url
    start, end = span
    at = url.rfind("@", start, end)
    return url if at < 0 else f"{url[:start]}***{url[at:]}"


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be an API base URL (a phrase after "the URL"), or ``None``."""
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return "contains whitespace or a control character"
    if not url.lower().startswith(("http://", "https://")):
        return "must start with http:// or https://"
    span = _authority(url)
    if span is not None and "@" in url[span[0] : span[1]]:
        return (
            "must not contain a user name or password (user:password@host); the API token "
            "goes in CLOUDFLARE_API_TOKEN (or OPENAI_API_KEY for provider openai) or the "
            "file their _FILE variable names"
        )
    try:
        parts = urlsplit(url)
        port = parts.port  # out of range or not a number: ValueError
    except ValueError as exc:
        return f"cannot be parsed ({exc})"
    if not parts.hostname:
        return "has no host name"
    if port == 0:
        return "has port 0; give a port from 1 to 65535"
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        return "must not have a query (?...) or a fragment (#...)"
    return None


def check_base_url(url: str, source: str) -> str:
    """``url`` normalised (lower-case scheme, no trailing ``/``), or :class:`JobError`
    naming ``source`` (where the URL came from) and what is wrong with it."""
    problem = url_problem(url)
    if problem is not None:
        raise JobError(
            f"invalid API base URL {shown(url)!r} from {source}: the URL {problem}; give an "
            f"http(s) URL such as {_EXAMPLE}"
        )
    scheme, rest = url.split("://", 1)
    return f"{scheme.lower()}://{rest}".rstrip("/")


def base_url_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """The base URL the environment sets and the variable that set it, or ``None``."""
    env = os.environ if environ is None else environ
    for var in BASE_URL_VARS:
        value = env.get(var)
        if value:
            return value, var
    return None


def resolve_base_url(explicit: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The checked base URL: ``explicit`` (``--base-url`` or the job's ``base_url``), else
    the environment's, else Cloudflare's API."""
    if explicit:
        return check_base_url(explicit, "--base-url or the job's base_url")
    found = base_url_from_env(environ)
    if found is None:
        return DEFAULT_BASE_URL
    return check_base_url(*found)


def resolve_openai_base_url(explicit: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The checked base URL of an OpenAI-compatible server: ``explicit`` (``--base-url`` or
    the job's ``base_url``), else ``OPENAI_BASE_URL``; ``""`` when neither is set."""
    if explicit:
        return check_base_url(explicit, "--base-url or the job's base_url")
    env = os.environ if environ is None else environ
    value = env.get(OPENAI_BASE_URL_VAR)
    return check_base_url(value, OPENAI_BASE_URL_VAR) if value else ""
