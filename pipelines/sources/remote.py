"""``s3://`` paths (AWS S3, Cloudflare R2, any S3-compatible store) through boto3.

Inputs are staged: the objects a ``source.path`` names (one object, a "folder" prefix or a
glob) are downloaded into the path's local mirror
(:func:`pipelines.job.spec.remote_mirror`) and read from there by the ordinary sources, so
keys (audio's relative paths included), column checks and streaming stay what they are for
local files. A Parquet object is staged by column (ranged reads through pyarrow's S3
filesystem): only the columns the job reads cross the network. Each staged file keeps the
object's ETag beside it (``.<name>.etag``): an unchanged object is not downloaded again,
and a staged file whose object is gone is removed, so ``output.sync`` sees it leave.

Outputs are journalled in the mirror and uploaded whole after the run (:func:`upload`), by
boto3's managed transfer: one PUT, or a multipart upload that is completed at the end or
aborted, so a reader sees the old object or the new one, never half of one. Before a run,
:func:`fetch_output` checks the bucket and, on a machine without the mirror, downloads the
previous output (or the newer one another machine uploaded, told by its ETag) so that
nothing done is paid for again.

Credentials come from boto3's usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE`` or the job's ``storage.profile``, instance roles); the endpoint from the
job's ``storage.endpoint_url``, else ``AWS_ENDPOINT_URL``. A missing bucket, missing or
refused credentials, or a denied access is one error (exit 2) decided by boto3's error
code, never by its message, and no secret is ever in it.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Any

from pipelines.core.errors import JobError, SourceError
from pipelines.core.files import atomic_path
from pipelines.job.spec import REMOTE_SCHEME, Job, is_remote, remote_mirror

__all__ = ["fetch_output", "output_objects", "stage_source", "upload"]

GLOB_CHARS = "*?["
DENIED = {"AccessDenied", "AllAccessDisabled", "403", "Forbidden"}
BAD_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
NO_BUCKET = {"NoSuchBucket"}
NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


def split(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` → ``(bucket, key)``."""
    bucket, _, key = url[len(REMOTE_SCHEME) :].partition("/")
    if not bucket:
        raise JobError(f"{url!r} names no bucket: write s3://BUCKET/KEY")
    return bucket, key


def _session(job: Job) -> Any:
    """The boto3 session of the job's storage settings (its profile, else the defaults)."""
    try:
        import boto3
        from botocore.exceptions import ProfileNotFound
    except ImportError as exc:
        raise JobError("s3:// paths need boto3: pip install 'pipelines[s3]'") from exc
    storage = job.storage
    try:
        session = (
            boto3.Session(profile_name=storage.profile) if storage.profile else boto3.Session()
        )
    except ProfileNotFound as exc:
        raise JobError(f"storage.profile: no AWS profile {storage.profile!r}") from exc
    return session


def _endpoint(job: Job) -> str | None:
    return job.storage.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None


def client(job: Job) -> Any:
    """A boto3 S3 client for the job's storage settings."""
    from botocore.config import Config

    config = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10)
    return _session(job).client(
        "s3", endpoint_url=_endpoint(job), region_name=job.storage.region, config=config
    )


def arrow_filesystem(job: Job) -> Any:
    """pyarrow's S3 filesystem with the same credentials, endpoint and region as boto3's
    (ranged reads: a Parquet object is read column by column, never whole)."""
    from botocore.exceptions import NoCredentialsError
    from pyarrow import fs

    session = _session(job)
    found = session.get_credentials()
    if found is None:
        raise NoCredentialsError()
    creds = found.get_frozen_credentials()
    return fs.S3FileSystem(
        access_key=creds.access_key,
        secret_key=creds.secret_key,
        session_token=creds.token,
        region=job.storage.region or session.region_name or "us-east-1",
        endpoint_override=_endpoint(job),
    )


def storage_error(exc: Exception, url: str, *, source: bool) -> JobError | SourceError:
    """One clear error for a failed storage call (never a traceback, never a secret)."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    kind = SourceError if source else JobError
    bucket = split(url)[0]
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return kind(
            f"{url}: no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(R2: an R2 API token's key pair), or AWS_PROFILE / storage.profile"
        )
    if isinstance(exc, EndpointConnectionError):
        return kind(f"{url}: cannot reach the storage endpoint ({exc.kwargs.get('endpoint_url')})")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in NO_BUCKET or (code in NOT_FOUND and not split(url)[1]):
            return kind(f"{url}: bucket {bucket} does not exist (or not at this endpoint)")
        if code in BAD_CREDENTIALS:
            return kind(f"{url}: the storage refused the credentials ({code})")
        if code in DENIED:
            return kind(f"{url}: access denied; the credentials need read and write on {bucket}")
        return kind(f"{url}: storage error {code or 'unknown'}")
    if isinstance(exc, BotoCoreError):
        return kind(f"{url}: storage error ({type(exc).__name__})")
    return kind(f"{url}: storage error ({type(exc).__name__})")


def _listing(s3: Any, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
    """Every object under ``prefix``: key → (size, ETag)."""
    found: dict[str, tuple[int, str]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = (int(obj["Size"]), str(obj.get("ETag", "")))
    return found


def _chosen(key: str, listing: dict[str, tuple[int, str]]) -> dict[str, tuple[int, str]]:
    """The objects ``key`` names: itself, the objects under it as a folder, or a glob's."""
    if any(ch in key for ch in GLOB_CHARS):
        return {k: v for k, v in listing.items() if fnmatch.fnmatchcase(k, key)}
    if key in listing:
        return {key: listing[key]}
    folder = key.rstrip("/") + "/" if key else ""
    return {k: v for k, v in listing.items() if k.startswith(folder) and not k.endswith("/")}


def _etag_file(local: Path) -> Path:
    return local.with_name(f".{local.name}.etag")


def _download(s3: Any, bucket: str, key: str, local: Path, etag: str) -> None:
    """Download into a temporary name and rename: a staged file is whole or absent."""
    marker = _etag_file(local)
    if local.exists() and marker.exists() and marker.read_text() == etag:
        return
    local.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(local) as part:  # whole or absent, and durable before its marker
        s3.download_file(bucket, key, str(part))
    marker.write_text(etag)


def _stage_parquet(arrow: Any, bucket: str, key: str, local: Path, etag: str, job: Job) -> None:
    """Copy only the columns the job reads, streamed row group by row group: a wide
    dataset's other columns never cross the network. The marker names the columns too, so a
    job that starts reading another column stages the file again."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.sources.base import needed_columns

    columns = needed_columns(job)
    stamp = f"{etag} {','.join(columns)}"
    marker = _etag_file(local)
    if local.exists() and marker.exists() and marker.read_text() == stamp:
        return
    local.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(local) as part, arrow.open_input_file(f"{bucket}/{key}") as remote:
        parquet = pq.ParquetFile(remote)
        # a column the file lacks is left out here: the source's own check then names it
        present = [c for c in columns if c in parquet.schema_arrow.names]
        writer = None
        try:
            for batch in parquet.iter_batches(columns=present or None):
                # the writer takes the batches' own schema (their column order)
                writer = writer or pq.ParquetWriter(part, batch.schema)
                writer.write_batch(batch)
            if writer is None:  # no rows: an empty file with the projected schema
                schema = parquet.schema_arrow
                fields = [schema.field(c) for c in present] if present else list(schema)
                pq.write_table(pa.schema(fields).empty_table(), part)
        finally:
            if writer is not None:
                writer.close()
    marker.write_text(stamp)


def stage_source(job: Job) -> None:
    """Mirror the objects ``source.path`` names (see the module docstring)."""
    url = job.source.path
    if not is_remote(url):
        return
    bucket, key = split(url)
    cut = min((key.find(c) for c in GLOB_CHARS if c in key), default=-1)
    # a glob lists from its fixed leading folders; a file or folder from itself
    prefix = key[: key.rfind("/", 0, cut) + 1] if cut >= 0 else key
    s3 = client(job)
    try:
        chosen = _chosen(key, _listing(s3, bucket, prefix))
        if not chosen:
            raise SourceError(f"source.path {url!r} names no objects")
        arrow = arrow_filesystem(job) if job.source.kind == "parquet" else None
        for name, (_, etag) in sorted(chosen.items()):
            local = remote_mirror(f"{REMOTE_SCHEME}{bucket}/{name}")
            if arrow is not None and name.lower().endswith((".parquet", ".pq")):
                _stage_parquet(arrow, bucket, name, local, etag, job)
            else:
                _download(s3, bucket, name, local, etag)
    except SourceError:
        raise
    except Exception as exc:  # botocore's tree: mapped by type and code, not by wording
        raise storage_error(exc, url, source=True) from exc
    _forget_gone(bucket, key, prefix, set(chosen))


def _forget_gone(bucket: str, key: str, prefix: str, keys: set[str]) -> None:
    """Remove staged files (those with an ETag beside them) that ``key`` names but whose
    object is gone; files staged for other paths are left alone."""
    base = remote_mirror(f"{REMOTE_SCHEME}{bucket}/")
    root = remote_mirror(f"{REMOTE_SCHEME}{bucket}/{prefix}")
    folder = root if root.is_dir() else root.parent
    staged = {}
    for marker in folder.rglob(".*.etag") if folder.is_dir() else []:
        local = marker.with_name(marker.name[1 : -len(".etag")])
        staged[local.relative_to(base).as_posix()] = (local, marker)
    for gone in set(_chosen(key, dict.fromkeys(staged, (0, "")))) - keys:
        for path in staged[gone]:
            path.unlink(missing_ok=True)


def output_objects(job: Job) -> list[tuple[Path, str]]:
    """The output's files in the mirror and the keys they are uploaded to."""
    from pipelines.job.paths import job_paths

    bucket, key = split(job.output.path)
    folder = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
    paths = job_paths(job.output_path)
    return [
        (p, f"{bucket}/{folder}{p.name}") for p in (paths.output, paths.failures, paths.manifest)
    ]


def fetch_output(job: Job) -> None:
    """Check the output's bucket; download the output (and its failures file and manifest)
    when the mirror lacks it or another machine uploaded a newer one."""
    if not is_remote(job.output.path):
        return
    from botocore.exceptions import ClientError

    s3 = client(job)
    url = job.output.path
    bucket_name = split(url)[0]
    try:
        s3.head_bucket(Bucket=bucket_name)
    except ClientError as exc:
        # HEAD answers carry no body: a missing bucket is a bare 404
        if str(exc.response.get("Error", {}).get("Code", "")) in NOT_FOUND:
            raise JobError(f"{url}: bucket {bucket_name} does not exist (or not here)") from exc
        raise storage_error(exc, url, source=False) from exc
    except Exception as exc:
        raise storage_error(exc, url, source=False) from exc
    try:
        for local, where in output_objects(job):
            bucket, _, key = where.partition("/")
            try:
                etag = str(s3.head_object(Bucket=bucket, Key=key)["ETag"])
            except ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code", "")) not in NOT_FOUND:
                    raise
                continue
            # the mirror is current when it holds the object this machine last uploaded or
            # fetched; another machine's newer upload replaces it
            _download(s3, bucket, key, local, etag)
    except Exception as exc:
        raise storage_error(exc, url, source=False) from exc


def upload(job: Job) -> list[str]:
    """Upload the output, its failures file and manifest; the URLs written."""
    if not is_remote(job.output.path):
        return []
    s3 = client(job)
    written = []
    try:
        for local, where in output_objects(job):
            if local.exists():
                bucket, _, key = where.partition("/")
                s3.upload_file(str(local), bucket, key)
                # remembered, so the next run knows the bucket holds this very file
                etag = str(s3.head_object(Bucket=bucket, Key=key)["ETag"])
                _etag_file(local).write_text(etag)
                written.append(REMOTE_SCHEME + where)
    except Exception as exc:
        raise storage_error(exc, job.output.path, source=False) from exc
    return written
