"""Language fields of m2m100 requests, checked against the catalog's one list of the
languages the model knows (:mod:`pipelines.catalog.languages`), so the emulator accepts
exactly what a job may ask for: ISO codes ("fr"), region tags ("pt-BR") and English names
("French"), as Cloudflare's schema and examples do (facts §2.3).
"""

from __future__ import annotations

from pipelines.catalog.languages import normalize_language
from pipelines.emulator.envelope import bad_input


def language_code(value: str, field: str) -> str:
    """The ISO code for a code ("fr", "pt-BR") or a name ("French"); 400 / 5006 otherwise."""
    code = normalize_language(value)
    if code is None:
        raise bad_input(f"Error: unsupported language {value!r} at '/{field}'")
    return code
