"""Whose an output is, and what produced its rows: the output's fingerprint, kept as named
parts so that a mismatch can say what differs.

Two groups of parts must match for a run to extend existing output without ``--fresh``:

- the *owner*: the job's ``name`` and its source (kind and path, relative to the output's
  folder, so moving a project folder keeps it); another job's output is never taken as
  this one's;
- the *results*: who produces them (``produced_by``: Cloudflare's model, the emulator or a
  local model), the task kind, model, params, text and language columns, key and kept
  columns.

``task.truncate`` is not a part: it changes which rows can be sent, not what a result is.
Files written before the parts were stored carry only a digest; they are recognised by
the digests older versions computed (:attr:`Fingerprint.legacy`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.job.spec import Job

# Each part, with how a message names it.
OWNER_PARTS = {"job": "job", "source": "input"}
RESULT_PARTS = {
    "produced_by": "results",
    "kind": "task.kind",
    "model": "task.model",
    "params": "task.params",
    "input": "task.input",
    "langs": "the language columns",
    "key": "source.key",
    "keep": "output.keep",
    "prompt": "the prompt (task.system, task.prompt, task.messages)",
    "output_schema": "task.output_schema",
    "images": "output.images",
}
# The parts older versions stored (their digest is recognised, see Fingerprint.legacy).
_LEGACY_PARTS = ("produced_by", "kind", "model", "params", "input", "langs", "key", "keep")


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _relative(job: Job, path: Path | None) -> str:
    """``path`` relative to the output's folder (moving a project folder keeps it)."""
    if path is None:
        return ""
    try:
        return Path(os.path.relpath(path, os.path.normpath(job.output_path.parent))).as_posix()
    except ValueError:  # another drive (Windows)
        return path.as_posix()


def _source_part(job: Job) -> str:
    source = os.path.normpath(job.resolve(job.source.path))
    folder = os.path.normpath(job.output_path.parent)
    try:
        shown = os.path.relpath(source, folder)
    except ValueError:  # another drive (Windows)
        shown = source
    return f"{job.source.kind} {Path(shown).as_posix()}"


@dataclass(frozen=True)
class Fingerprint:
    """The parts that make existing output this job's, and compatible with this run."""

    parts: dict[str, str]
    legacy: frozenset[str] = field(default_factory=frozenset)

    @property
    def digest(self) -> str:
        """One hash of every part."""
        return _digest(self.parts)

    def differences(self, stored: dict[str, str]) -> list[str]:
        """The names of the parts ``stored`` has and that differ from ours."""
        return [k for k, v in self.parts.items() if k in stored and stored[k] != v]


def fingerprint(job: Job, produced_by: str | None = None) -> Fingerprint:
    """What makes existing output ``job``'s and compatible with who computes it now."""
    t = job.task
    values: dict[str, Any] = {
        "job": job.name,
        "source": _source_part(job),
        "produced_by": produced_by or t.model,
        "kind": t.kind,
        "model": t.model,
        "params": t.params,
        "input": t.input or "",
        "langs": [t.source_lang_column, t.target_lang_column],
        "key": job.source.key or "",
        "keep": job.output.keep,
        "prompt": [t.system, t.prompt, [m.model_dump() for m in t.messages or []]]
        if t.kind == "generate"
        else "",
        "output_schema": t.output_schema or "",
    }
    if t.kind == "image":  # what draws each picture, and where the pictures are
        values["prompt"] = [t.prompt, t.negative_prompt, t.seed_column]
        values["images"] = _relative(job, job.images_path)
    # what versions before the named parts stored: one digest, truncate included
    old = {k: values[k] for k in _LEGACY_PARTS}
    old.update(input=t.input, key=job.source.key)
    legacy = frozenset(_digest({**old, "truncate": flag}) for flag in (False, True))
    return Fingerprint({k: _text(v) for k, v in values.items()}, legacy)


def stored_parts(meta: dict[str, str]) -> dict[str, str] | None:
    """The parts recorded in a file's metadata (None for files of older versions)."""
    try:
        parts = json.loads(meta["identity"])
    except (KeyError, ValueError):
        return None
    if not isinstance(parts, dict):
        return None
    return {str(k): str(v) for k, v in parts.items()}


def _owner(parts: dict[str, str]) -> str:
    """``job 'x' reading csv data/in.csv`` (what of it is known)."""
    job = f"job '{parts['job']}'" if "job" in parts else "another job"
    return f"{job} reading {parts['source']}" if "source" in parts else job


def mismatch(where: Path, ours: Fingerprint, meta: dict[str, str]) -> str | None:
    """Why the file (or work folder) ``where``, with metadata ``meta``, is not this run's
    to extend, saying what differs and how to go on; None when it is."""
    parts = stored_parts(meta)
    if parts is None:
        if meta.get("fingerprint") in ours.legacy:
            parts = {"job": meta["job"]} if "job" in meta else {}
        else:  # an older version's file: name what its metadata still tells
            parts = {k: meta[k] for k in ("job", "produced_by", "model") if k in meta}
            if not ours.differences(parts):
                return (
                    f"{where} was made by an earlier version of pipelines with another task, "
                    "params, key or kept columns; re-run with --fresh to start over, or "
                    "choose another output.path"
                )
    elif meta.get("fingerprint") == ours.digest:
        return None
    differ = ours.differences(parts)
    if not differ:
        return None
    if any(k in OWNER_PARTS for k in differ):
        return (
            f"{where} was made by {_owner(parts)}; this is {_owner(ours.parts)}: choose "
            "another output.path for this job, or re-run with --fresh to take it over (its "
            "rows are dropped and made again)"
        )
    said = []
    for k in differ:
        if k == "produced_by":
            said.append(
                f"its results were produced by {parts[k]}, this run's come from {ours.parts[k]}"
            )
        else:
            said.append(
                f"{RESULT_PARTS[k]} was {parts[k] or '(none)'}, now {ours.parts[k] or '(none)'}"
            )
    return (
        f"{where} does not match this run: {'; '.join(said)}. Re-run with --fresh to start "
        "over, or choose another output.path (one per provider or model keeps each)"
    )
