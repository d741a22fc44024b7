"""``s3://`` sources and outputs against a real S3-compatible server on loopback (moto's
standalone server), with the Workers AI emulator: globs, folders and Parquet inputs, audio
folders for transcription, an output uploaded whole and resumed on another machine, and
one clear error (exit 2, nothing spent) for a missing bucket or missing credentials."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.emulator.server import RunningEmulator

boto3 = pytest.importorskip("boto3", reason="the s3 extra (boto3) is not installed")
moto_server = pytest.importorskip("moto.server", reason="moto's server is not installed")

REPO = Path(__file__).resolve().parents[1]
SECRET = "s3-secret-key-0123456789abcdef"
SMALL = "@cf/baai/bge-small-en-v1.5"


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def aws_env(url: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing-key",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": url,
        # no ~/.aws files and no instance metadata (it is not on loopback)
        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@pytest.fixture
def s3(s3_url: str, request: pytest.FixtureRequest) -> Any:
    client = boto3.client(
        "s3",
        endpoint_url=s3_url,
        region_name="us-east-1",
        aws_access_key_id="testing-key",
        aws_secret_access_key=SECRET,
    )
    bucket = "bkt-" + request.node.name.replace("_", "-")[:40].lower().rstrip("-")
    client.create_bucket(Bucket=bucket)
    client.bucket = bucket
    return client


def cli(
    emu: RunningEmulator, tmp: Path, state: str, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    full = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "CLOUDFLARE_ACCOUNT_ID": "s3-acct",
        "CLOUDFLARE_API_TOKEN": "s3-token-0123456789",
        "CLOUDFLARE_API_BASE_URL": emu.base_url,
        "PIPELINES_STATE_DIR": str(tmp / state),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=600,
    )


def job_file(tmp: Path, source: str, output: str, kind: str = "csv", extra: str = "") -> Path:
    if kind == "audio":
        task = 'task: {kind: transcribe, model: "@cf/openai/whisper"}\n'
    else:
        task = f'task: {{kind: embed, model: "{SMALL}", input: text}}\n'
    key = "" if kind == "audio" else ", key: doc_id"
    path = tmp / "job.yaml"
    path.write_text(
        f"name: s3-job\nprovider: cloudflare\nsource: {{kind: {kind}, path: '{source}'{key}}}\n"
        f"{task}output: {{path: '{output}', sync: true}}\n{extra}"
    )
    return path


def put_csv(s3: Any, key: str, rows: range) -> None:
    body = "doc_id,text\n" + "".join(f"{i},text number {i}\n" for i in rows)
    s3.put_object(Bucket=s3.bucket, Key=key, Body=body.encode())


def remote_table(s3: Any, key: str) -> pa.Table:
    body = s3.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    return pq.read_table(io.BytesIO(body))


@pytest.mark.emulator(rpm_scale=100)
def test_csv_glob_in_and_parquet_out_on_s3(
    tmp_path: Path, emu: RunningEmulator, s3: Any, s3_url: str
) -> None:
    put_csv(s3, "in/part-1.csv", range(10))
    put_csv(s3, "in/part-2.csv", range(10, 25))
    s3.put_object(Bucket=s3.bucket, Key="in/readme.txt", Body=b"not data")
    b = s3.bucket
    job = job_file(tmp_path, f"s3://{b}/in/*.csv", f"s3://{b}/out/emb.parquet")
    env = aws_env(s3_url)
    first = cli(emu, tmp_path, "state-a", env, "run", "--no-progress", str(job))
    assert first.returncode == 0, first.stderr
    table = remote_table(s3, "out/emb.parquet")
    assert table.num_rows == 25 and len(set(table.column("_key").to_pylist())) == 25
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=b, Prefix="out/")["Contents"]}
    assert keys == {"out/emb.parquet", "out/emb.manifest.json"}
    spent = emu.stats()["neurons_today"]

    # another machine (an empty state folder, so no cache): the output is fetched first,
    # so only the new file's rows are paid for; a removed file's rows leave (sync)
    put_csv(s3, "in/part-3.csv", range(25, 30))
    s3.delete_object(Bucket=b, Key="in/part-1.csv")
    second = cli(emu, tmp_path, "state-b", env, "run", "--no-progress", str(job))
    assert second.returncode == 0, second.stderr
    assert "rows done 5," in second.stdout
    table = remote_table(s3, "out/emb.parquet")
    assert sorted(int(k) for k in table.column("_key").to_pylist()) == list(range(10, 30))
    assert emu.stats()["neurons_today"] > spent
    for result in (first, second):
        assert SECRET not in result.stdout + result.stderr
    manifest = s3.get_object(Bucket=b, Key="out/emb.manifest.json")["Body"].read().decode()
    assert SECRET not in manifest
    # back on the first machine: the newer output is fetched, nothing is paid again
    spent = emu.stats()["neurons_today"]
    third = cli(emu, tmp_path, "state-a", env, "run", "--no-progress", str(job))
    assert third.returncode == 0, third.stderr
    assert "rows done 0," in third.stdout and emu.stats()["neurons_today"] == spent
    assert remote_table(s3, "out/emb.parquet").num_rows == 20
    # status reads the mirror only: no credentials, no endpoint, no network
    status = cli(emu, tmp_path, "state-b", {}, "status", "--json", str(job))
    assert status.returncode == 0, status.stderr
    [row] = json.loads(status.stdout)["jobs"]
    assert (row["rows_total"], row["rows_done"], row["rows_pending"]) == (20, 20, 0)


@pytest.mark.emulator(rpm_scale=100)
def test_a_parquet_folder_read_by_column_with_the_endpoint_in_the_job(
    tmp_path: Path, emu: RunningEmulator, s3: Any, s3_url: str
) -> None:
    for part in range(2):
        table = pa.table(
            {
                "doc_id": [f"p{part}-{i}" for i in range(5)],
                "text": [f"parquet text {part} {i}" for i in range(5)],
                "unused": ["x" * 100] * 5,
            }
        )
        buf = io.BytesIO()
        pq.write_table(table, buf)
        s3.put_object(Bucket=s3.bucket, Key=f"ds/year=202{part}/data.parquet", Body=buf.getvalue())
    job = job_file(
        tmp_path,
        f"s3://{s3.bucket}/ds",
        str(tmp_path / "local" / "out.parquet"),
        kind="parquet",
        extra=f"storage: {{endpoint_url: '{s3_url}', region: us-east-1}}\n",
    )
    env = {k: v for k, v in aws_env(s3_url).items() if k != "AWS_ENDPOINT_URL"}
    done = cli(emu, tmp_path, "state", env, "run", "--no-progress", str(job))
    assert done.returncode == 0, done.stderr
    assert pq.read_table(tmp_path / "local" / "out.parquet").num_rows == 10
    # only the columns the job reads were staged (ranged reads of the object)
    staged = tmp_path / "state" / "remote" / s3.bucket / "ds" / "year=2020" / "data.parquet"
    assert pq.read_schema(staged).names == ["text", "doc_id"]


@pytest.mark.emulator(rpm_scale=100)
def test_an_audio_folder_on_s3_is_transcribed(
    tmp_path: Path, emu: RunningEmulator, s3: Any, s3_url: str
) -> None:
    for name in ("greeting.wav", "news.mp3"):
        data = (REPO / "sample_data" / "audio" / name).read_bytes()
        s3.put_object(Bucket=s3.bucket, Key=f"audio/talks/{name}", Body=data)
    job = job_file(
        tmp_path, f"s3://{s3.bucket}/audio", f"s3://{s3.bucket}/out/tx.parquet", kind="audio"
    )
    done = cli(emu, tmp_path, "state", aws_env(s3_url), "run", "--no-progress", str(job))
    assert done.returncode == 0, done.stderr
    table = remote_table(s3, "out/tx.parquet")
    assert sorted(table.column("_key").to_pylist()) == ["talks/greeting.wav", "talks/news.mp3"]


@pytest.mark.emulator(rpm_scale=100)
@pytest.mark.parametrize("case", ["no-source-bucket", "no-output-bucket", "no-credentials"])
def test_storage_problems_are_one_line_before_any_neuron(
    tmp_path: Path, emu: RunningEmulator, s3: Any, s3_url: str, case: str
) -> None:
    put_csv(s3, "in/a.csv", range(3))
    source, output = f"s3://{s3.bucket}/in/a.csv", f"s3://{s3.bucket}/out/o.parquet"
    env = aws_env(s3_url)
    if case == "no-source-bucket":
        source = "s3://no-such-bucket-here/in/a.csv"
    elif case == "no-output-bucket":
        output = "s3://no-such-bucket-here/out/o.parquet"
    else:
        env = {
            k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        }
    before = emu.stats()["neurons_today"]
    done = cli(
        emu, tmp_path, "state", env, "run", "--no-progress", str(job_file(tmp_path, source, output))
    )
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    expected = "no AWS credentials" if case == "no-credentials" else "does not exist"
    assert expected in errors[0]
    assert emu.stats()["neurons_today"] == before


@pytest.fixture(scope="module")
def locked_s3() -> Iterator[tuple[str, dict[str, str]]]:
    """A second moto server that checks IAM: after its first four requests (the setup
    below), a user without any policy is denied everything."""
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # waits for the server to listen, not for a clock
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.05)
        admin = {"endpoint_url": url, "region_name": "us-east-1"}
        keys = {"aws_access_key_id": "admin", "aws_secret_access_key": "admin"}
        iam = boto3.client("iam", **admin, **keys)
        iam.create_user(UserName="nobody")
        key = iam.create_access_key(UserName="nobody")["AccessKey"]
        s3 = boto3.client("s3", **admin, **keys)
        s3.create_bucket(Bucket="locked")
        s3.put_object(Bucket="locked", Key="a.csv", Body=b"doc_id,text\n1,some text\n")
        env = {
            **aws_env(url),
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        }
        yield url, env
    finally:
        server.kill()
        server.wait()


@pytest.mark.emulator(rpm_scale=100)
@pytest.mark.parametrize("side", ["source", "output"])
def test_access_denied_is_one_line_before_any_neuron(
    tmp_path: Path, emu: RunningEmulator, locked_s3: tuple[str, dict[str, str]], side: str
) -> None:
    _, env = locked_s3
    (tmp_path / "a.csv").write_text("doc_id,text\n1,some text\n")
    if side == "source":
        # at the bucket's top: moto's signature check stumbles on a "/" in a listing's
        # prefix (SignatureDoesNotMatch where S3 says AccessDenied)
        job = job_file(tmp_path, "s3://locked/a.csv", str(tmp_path / "out.parquet"))
    else:
        job = job_file(tmp_path, str(tmp_path / "a.csv"), "s3://locked/out/o.parquet")
    before = emu.stats()["neurons_today"]
    done = cli(emu, tmp_path, "state", env, "run", "--no-progress", str(job))
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "access denied" in errors[0], done.stderr
    assert env["AWS_SECRET_ACCESS_KEY"] not in done.stderr + done.stdout
    assert emu.stats()["neurons_today"] == before
