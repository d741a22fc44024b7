"""Whether the files already at an output's paths are this job's to extend, to replace
with ``--fresh``, or someone else's to leave alone.

:func:`check_ownership` only reads. It refuses, ``--fresh`` or not, a folder or a symbolic
link where a file goes, and a file pipelines did not write (a Parquet file without our
metadata, a manifest that is not one): pipelines never deletes or overwrites those.
Without ``--fresh`` it also refuses files of another job or made with other settings,
saying what differs (:func:`pipelines.output.identity.mismatch`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.errors import OutputError
from pipelines.core.secrets import MASK
from pipelines.job.paths import JobPaths
from pipelines.output.identity import Fingerprint, mismatch

META_PREFIX = "pipelines."

_FOREIGN = "pipelines never deletes or overwrites a file it did not make: move it away or "


def file_metadata(path: Path) -> dict[str, str]:
    """Our key-value metadata of a Parquet file (without the prefix)."""
    raw = pq.read_schema(path).metadata or {}
    out: dict[str, str] = {}
    for k, v in raw.items():
        key = k.decode("utf-8", "replace")
        if key.startswith(META_PREFIX):
            out[key[len(META_PREFIX) :]] = v.decode("utf-8", "replace")
    return out


def check_ownership(paths: JobPaths, ours: Fingerprint, *, fresh: bool) -> None:
    """Raise :class:`OutputError` unless the existing files may be used (see the module)."""
    try:
        _check_kinds(paths)
        found = _claims(paths, fresh=fresh)
    except OSError as exc:  # a name the file system refuses to even look up
        raise OutputError(
            f"cannot use {paths.output} ({exc.strerror or exc}); choose another output.path"
        ) from exc
    if fresh:
        return
    for where, meta in found:
        why = mismatch(where, ours, meta)
        if why is not None:
            raise OutputError(why)


def _check_kinds(paths: JobPaths) -> None:
    """Every written path is a file (or missing), never a folder or a link."""
    for label, path in paths.files():
        if path.is_symlink():
            raise OutputError(
                f"{label} {path} is a symbolic link; pipelines replaces its files whole, "
                "which would replace the link: point output.path at the real file"
            )
        if path.is_dir():
            what = "output path" if path == paths.output else label
            raise OutputError(f"{what} {path} is a folder; name a .parquet file elsewhere")
    if paths.work.exists() and not paths.work.is_dir():
        raise OutputError(f"{paths.work} is a file; pipelines keeps its work folder there")


def _claims(paths: JobPaths, *, fresh: bool) -> list[tuple[Path, dict[str, str]]]:
    """Each existing output, failures file, work folder and manifest with its metadata."""
    found: list[tuple[Path, dict[str, str]]] = []
    for path in (paths.output, paths.failures):
        if path.exists():
            found.append((path, _parquet_metadata(path)))
    work = _work_metadata(paths.work / "meta.json", fresh=fresh)
    if work is not None:
        found.append((paths.work, work))
    manifest = _manifest_metadata(paths.manifest)
    if manifest is not None:
        found.append((paths.manifest, manifest))
    return found


def _parquet_metadata(path: Path) -> dict[str, str]:
    try:
        meta = file_metadata(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise OutputError(
            f"{path} exists but is not readable Parquet ({exc}); {_FOREIGN}choose another "
            "output.path"
        ) from exc
    if "fingerprint" not in meta:
        raise OutputError(
            f"{path} exists and was not written by pipelines; {_FOREIGN}choose another output.path"
        )
    return meta


def _work_metadata(meta_file: Path, *, fresh: bool) -> dict[str, str] | None:
    if not meta_file.exists():
        return None
    try:
        raw = json.loads(meta_file.read_bytes())
        return {str(k): str(v) for k, v in raw.items()}
    except (ValueError, OSError, AttributeError) as exc:
        if fresh:
            return None  # pipelines' own file in its own folder, damaged: --fresh replaces it
        raise OutputError(
            f"{meta_file} is damaged ({exc}); re-run with --fresh to start over"
        ) from exc


def _manifest_metadata(path: Path) -> dict[str, str] | None:
    """The manifest's owner as metadata :func:`mismatch` reads; None when there is none."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OutputError(f"cannot read {path} ({exc.strerror or exc}); move it away") from exc
    except ValueError:  # not JSON, or not text at all
        data = None
    if not isinstance(data, dict) or "manifest_version" not in data:
        raise OutputError(
            f"{path} exists and is not a pipelines manifest; {_FOREIGN}choose another output.path"
        )
    if not isinstance(data.get("job"), str) or MASK in data["job"]:
        # a job name that held the API token was masked when the manifest was written:
        # the manifest cannot say whose it is (the output's own metadata still does)
        return None
    return {"identity": json.dumps({"job": data["job"]})}
