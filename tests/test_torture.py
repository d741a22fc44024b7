"""Torture tests (issue 8 §2): ``kill -9`` at 20 random moments of a 20,000-row job, every
emulator fault alone and combined, an output folder that cannot be written and a full disk.

Each test bounds itself in time; all of them drive the real CLI against the project's
Workers AI emulator on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipelines.cli import main
from pipelines.emulator import EmulatorConfig, running_emulator

BGE = "@cf/baai/bge-small-en-v1.5"
WORDS = (
    "alpha beta gamma delta river mountain city market music garden ocean winter "
    "copper violet lantern harbor meadow signal thunder quiet"
).split()


# -- fixtures and helpers ----------------------------------------------------------------


# per-minute limits raised 20 times: the tests pick their own pace (limits in the job)
KNOBS: dict[str, Any] = {"daily_neurons": 1_000_000, "rpm_scale": 20, "seed": 8}
pytestmark = pytest.mark.emulator(**KNOBS)


def _calm(emu: Any) -> None:
    """Every fault knob off (the emulator is shared by the module's tests)."""
    for knob in (
        "latency_ms",
        "latency_jitter_ms",
        "spike_rate",
        "spike_ms",
        "error_rate",
        "capacity_rate",
        "capacity_burst_every_s",
        "capacity_burst_len_s",
        "drop_rate",
        "malformed_rate",
    ):
        setattr(emu.config, knob, 0.0)


def text_of(i: int) -> str:
    return " ".join(WORDS[(i * k + k * k) % len(WORDS)] for k in range(1, 9)) + f" #{i}"


def write_corpus(path: Path, n: int, start: int = 0) -> None:
    frame = pl.DataFrame(
        {
            "doc_id": list(range(start, start + n)),
            "text": [text_of(i) for i in range(start, start + n)],
        }
    )
    frame.write_csv(path)


def write_job(folder: Path, *, limits: str = "{}", name: str = "torture") -> Path:
    job = folder / "job.yaml"
    job.write_text(
        f"""name: {name}
source: {{kind: csv, path: corpus.csv, key: doc_id}}
task: {{kind: embed, model: "{BGE}", input: text}}
output: {{path: out/result.parquet, keep: [doc_id]}}
limits: {limits}
"""
    )
    return job


def run_cli(*args: str) -> tuple[int, str, str, BaseException | None]:
    """One in-process CLI run: exit code, stdout, stderr and any uncaught exception."""
    result = CliRunner().invoke(main, list(args))
    exc = None if isinstance(result.exception, SystemExit) else result.exception
    return result.exit_code, result.stdout, result.stderr, exc


def run_process(job: Path, env: dict[str, str], timeout: float = 120) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines", "run", "--no-progress", str(job)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_line_error(code: int, stderr: str, *, expected_code: int = 2) -> str:
    assert code == expected_code, stderr
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def read_everywhere(path: Path) -> int:
    """Rows of ``path`` read by polars, pyarrow and DuckDB; keys must be unique in each."""
    frame = pl.read_parquet(path)
    table = pq.read_table(path)
    with duckdb.connect() as con:
        row = con.execute(
            "SELECT count(*), count(DISTINCT _key) FROM read_parquet(?)", [str(path)]
        ).fetchone()
    assert row is not None
    rows, distinct = int(row[0]), int(row[1])
    assert frame.height == table.num_rows == rows
    assert frame["_key"].n_unique() == distinct == rows, f"duplicate keys in {path}"
    return rows


def embeddings(path: Path) -> dict[str, np.ndarray]:
    frame = pl.read_parquet(path, columns=["_key", "embedding"])
    return {
        k: np.asarray(v, dtype=np.float32)
        for k, v in zip(frame["_key"].to_list(), frame["embedding"].to_list(), strict=True)
    }


def reference_vectors(tmp: Path, keys: list[int]) -> dict[str, np.ndarray]:
    """A clean run (no faults, no cache) over ``keys`` only: the vectors to compare with."""
    ref = tmp / "reference"
    ref.mkdir()
    pl.DataFrame({"doc_id": keys, "text": [text_of(i) for i in keys]}).write_csv(ref / "corpus.csv")
    job = write_job(ref, name="reference")
    code, out, err, exc = run_cli("run", "--no-progress", "--no-cache", str(job))
    assert exc is None and code == 0, out + err
    return embeddings(ref / "out/result.parquet")


def assert_vectors_match(output: Path, reference: dict[str, np.ndarray]) -> None:
    got = embeddings(output)
    for key, vector in reference.items():
        np.testing.assert_allclose(got[key], vector, rtol=1e-6, atol=1e-7, err_msg=key)


def leftovers(folder: Path) -> list[str]:
    """Temporary files and journals anywhere under ``folder``."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if ".tmp" in p.name or p.suffix == ".arrow" or p.name.startswith(".probe")
    )


def items_sent(emu: Any) -> int:
    return int(emu.stats()["models"].get(BGE, {}).get("items", 0))


# -- kill -9 -------------------------------------------------------------------------------

KILL_ROWS = 20_000
KILLS = 20
KILL_CONCURRENCY = 4
KILL_BATCH = 100
KILL_RPM = 1_200  # 20 requests a second: the job sends for ~10 s in all
ROWS_PER_S = KILL_BATCH * KILL_RPM / 60
SEND_S = KILL_ROWS / ROWS_PER_S
STARTUP_S = 1.5  # interpreter, input scan and done keys, before the first request
NEURONS_PER_ROW = 0.0225  # bge-small on these texts (448 neurons for 20,000 rows)


@pytest.mark.slow
def test_kill_9_at_20_random_moments_then_every_row_exactly_once(
    tmp_path: Path, env: dict[str, str], emu: Any
) -> None:
    """20 seeded random moments spread over the job's ~10 s of sending; each run resumes
    and is ``kill -9``'ed at the next moment (measured from its first journaled result).
    Some runs are killed during start-up instead, and some get a ``--max-neurons`` close
    to their share, so they may stop by themselves and write the output: kills then also
    land while that output is merged and replaced, and it must stay readable throughout."""
    n = KILL_ROWS
    write_corpus(tmp_path / "corpus.csv", n)
    job = write_job(
        tmp_path,
        limits=f"{{batch_size: {KILL_BATCH}, concurrency: {KILL_CONCURRENCY}, "
        f"requests_per_minute: {KILL_RPM}}}",
    )
    output = tmp_path / "out/result.parquet"
    work = tmp_path / "out/.result.parquet.pipelines"
    emu.config.latency_ms = 10
    emu.config.latency_jitter_ms = 5
    rng = random.Random(20_000)
    moments = sorted(rng.uniform(0.0, 0.9 * SEND_S) for _ in range(KILLS))
    landed = 0  # kills that hit a live process (the others came after it had exited)
    for gap in (b - a for a, b in zip([0.0, *moments], moments, strict=False)):
        args = ["run", "--no-progress"]
        phase = rng.random()
        if phase > 0.7:
            cap = gap * ROWS_PER_S * NEURONS_PER_ROW * rng.uniform(0.5, 1.5)
            args += ["--max-neurons", str(max(1, round(cap)))]
        before = set(work.glob("results-*.arrow")) if work.exists() else set()
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines", *args, str(job)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        start = time.monotonic()
        if phase < 0.15:  # during start-up
            deadline = start + rng.uniform(0.0, STARTUP_S)
        else:  # once this run is sending: wait for its journal, then for the moment
            while proc.poll() is None and time.monotonic() - start < 30:
                if work.exists() and set(work.glob("results-*.arrow")) - before:
                    break
                time.sleep(0.005)
            deadline = time.monotonic() + gap
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            landed += 1
        _, err = proc.communicate(timeout=60)
        assert b"Traceback" not in err, err.decode()
        assert proc.returncode in (-signal.SIGKILL, 0, 3), err.decode()
        if output.exists():  # never torn, whenever the kill came
            assert read_everywhere(output) <= n
    assert landed >= KILLS // 2, f"only {landed} of {KILLS} kills hit a running process"

    code, out, err = run_process(job, env)
    assert code == 0, out + err
    assert read_everywhere(output) == n
    frame = pl.read_parquet(output, columns=["_key", "doc_id"])
    assert sorted(int(k) for k in frame["_key"].to_list()) == list(range(n))
    assert frame["_key"].to_list() == frame["doc_id"].to_list()
    assert leftovers(tmp_path / "out") == []
    assert not (tmp_path / "out/result.failures.parquet").exists()
    sent = items_sent(emu)
    # every row was sent at least once; only the requests in flight at a kill twice
    assert n <= sent <= n + KILL_CONCURRENCY * KILL_BATCH * landed, (sent, landed)

    _calm(emu)
    sample = sorted(random.Random(7).sample(range(n), 300))
    assert_vectors_match(output, reference_vectors(tmp_path, sample))


# -- emulator faults -----------------------------------------------------------------------

FAULT_ROWS = 1_000
FAULT_LIMITS = "{batch_size: 10, concurrency: 8, requests_per_minute: 30000}"
# (small requests: each fault hits many of them)
# name: (emulator knobs, job limits, the exit codes the first run may give). Any fault can
# exhaust a request's retries now and then (exit 1, retried by the next run); with 3040
# bursts it is common, as a burst outlasts the first, short back-offs.
FAULTS: dict[str, tuple[dict[str, float], str, tuple[int, ...]]] = {
    "5xx-20pct": ({"error_rate": 0.2}, FAULT_LIMITS, (0, 1)),
    "dropped-connections": ({"drop_rate": 0.15}, FAULT_LIMITS, (0, 1)),
    "3040-bursts": (
        {"capacity_burst_every_s": 2.0, "capacity_burst_len_s": 0.5},
        FAULT_LIMITS,
        (0, 1),
    ),
    "3040-random": ({"capacity_rate": 0.2}, FAULT_LIMITS, (0, 1)),
    "latency-spikes": ({"latency_ms": 5, "spike_rate": 0.1, "spike_ms": 400}, FAULT_LIMITS, (0, 1)),
    # spikes longer than the request timeout: the client gives up on requests the emulator
    # still answers and bills, and sends them again
    "timeouts": (
        {"spike_rate": 0.1, "spike_ms": 800},
        "{batch_size: 10, concurrency: 8, requests_per_minute: 30000, timeout_s: 0.3}",
        (0, 1),
    ),
    "malformed-bodies": ({"malformed_rate": 0.2}, FAULT_LIMITS, (0, 1)),
    # two tries only: ~6 % of the requests run out of retries, their rows are recorded as
    # retryable failures (exit 1) and the next run sends exactly those
    "5xx-retries-run-out": (
        {"error_rate": 0.25},
        "{batch_size: 10, concurrency: 8, requests_per_minute: 30000, max_attempts: 2}",
        (1,),
    ),
    "combined": (
        {
            "error_rate": 0.1,
            "drop_rate": 0.05,
            "capacity_rate": 0.05,
            "capacity_burst_every_s": 3.0,
            "capacity_burst_len_s": 0.5,
            "malformed_rate": 0.05,
            "latency_ms": 5,
            "latency_jitter_ms": 5,
            "spike_rate": 0.05,
            "spike_ms": 300,
        },
        FAULT_LIMITS,
        (0, 1),
    ),
}


@pytest.fixture(scope="module")
def fault_reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    tmp = tmp_path_factory.mktemp("fault-reference")
    # its own, calm emulator (outputs are salted by the seed: the same one as the tests')
    with running_emulator(EmulatorConfig(**KNOBS)) as emu, pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLOUDFLARE_ACCOUNT_ID", "acct-reference")
        mp.setenv("CLOUDFLARE_API_TOKEN", "reference-token")
        mp.setenv("CLOUDFLARE_API_BASE_URL", emu.base_url)
        mp.setenv("PIPELINES_STATE_DIR", str(tmp / "state"))
        return reference_vectors(tmp, list(range(FAULT_ROWS)))


@pytest.mark.slow
@pytest.mark.parametrize("case", list(FAULTS))
def test_faults_lose_and_duplicate_nothing(
    tmp_path: Path,
    env: dict[str, str],
    emu: Any,
    case: str,
    fault_reference: dict[str, np.ndarray],
) -> None:
    knobs, limits, first_codes = FAULTS[case]
    write_corpus(tmp_path / "corpus.csv", FAULT_ROWS)
    job = write_job(tmp_path, limits=limits)
    emu.reset()
    for knob, value in knobs.items():
        setattr(emu.config, knob, value)
    codes: list[int] = []
    # without client timeouts every billed row is a kept row; with them, a request the
    # client gave up on is still answered and billed (as Cloudflare would), then resent
    exact = "timeout_s" not in limits
    failed: set[str] = set()
    for _ in range(5):  # rows whose retries ran out are sent again by the next run
        sent_before = items_sent(emu)
        code, out, err, exc = run_cli("run", "--no-progress", str(job))
        assert exc is None, f"uncaught {exc!r}\n{out}{err}"
        assert "Traceback" not in err
        summary = re.search(r"rows done ([\d,]+), failed ([\d,]+)", out)
        assert summary is not None, out
        done_now, failed_now = (int(g.replace(",", "")) for g in summary.groups())
        if codes:  # a re-run tries exactly the rows that had failed, and nothing else
            assert done_now + failed_now == len(failed), (codes, out)
        if exact:  # ... and pays for each row it keeps once
            assert items_sent(emu) - sent_before == done_now, out
        codes.append(code)
        if code == 0:
            break
        assert code == 1, out + err
        failures = pl.read_parquet(tmp_path / "out/result.failures.parquet")
        assert failures["retryable"].all(), failures.filter(~pl.col("retryable"))
        assert set(failures["error"]) <= {"ServerError", "TransportError", "CapacityExceeded"}
        failed = set(failures["_key"])
        # the failed rows are not in the output (nothing half-done), nor lost
        done = set(pl.read_parquet(tmp_path / "out/result.parquet")["_key"])
        assert not failed & done
        assert len(done) + len(failed) == FAULT_ROWS
    _calm(emu)
    emu.wait_idle()  # requests the client gave up on are answered, and billed, by now
    assert codes[0] in first_codes and codes[-1] == 0, codes
    output = tmp_path / "out/result.parquet"
    assert read_everywhere(output) == FAULT_ROWS
    assert sorted(int(k) for k in pl.read_parquet(output)["_key"]) == list(range(FAULT_ROWS))
    failures_file = tmp_path / "out/result.failures.parquet"
    assert not failures_file.exists() or pl.read_parquet(failures_file).height == 0
    assert leftovers(tmp_path / "out") == []
    assert_vectors_match(output, fault_reference)
    # rows are billed once, except those of requests the client timed out on
    sent = items_sent(emu)
    assert sent >= FAULT_ROWS
    if exact:
        assert sent == FAULT_ROWS, sent


# -- an output that cannot be written ------------------------------------------------------


def _mount_tmpfs(folder: Path, size: str) -> None:
    """A ``size`` tmpfs on ``folder``: a disk that fills up (skips where mounting is not
    permitted, e.g. without root)."""
    folder.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode})")


def _umount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


@contextlib.contextmanager
def read_only_folder(folder: Path) -> Iterator[str]:
    """``folder`` made unwritable for this process, by whatever really works here.

    As an ordinary user ``chmod 0o500`` does; root ignores modes, so as root the folder is
    made immutable (``chattr +i``, refused even to root). Yields how it was done.
    """
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o500)
        try:
            yield "chmod 0o500"
        finally:
            folder.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("running as root without chattr: no way to make a folder unwritable")
    proc = subprocess.run([chattr, "+i", str(folder)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"running as root and chattr +i is refused: {proc.stderr.strip()}")
    try:
        probe = folder / ".writable-probe"
        try:
            probe.write_bytes(b"x")
        except OSError:
            pass
        else:
            probe.unlink()
            pytest.skip("chattr +i did not make the folder read-only on this file system")
        yield "chattr +i"
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=False)


def _good_output(tmp_path: Path, rows: int) -> tuple[Path, Path, bytes]:
    write_corpus(tmp_path / "corpus.csv", rows)
    job = write_job(tmp_path, limits="{batch_size: 50}")
    code, out, err, exc = run_cli("run", "--no-progress", str(job))
    assert exc is None and code == 0, out + err
    output = tmp_path / "out/result.parquet"
    return job, output, output.read_bytes()


def test_unwritable_output_folder_is_one_line_error_and_keeps_the_output(
    tmp_path: Path, env: dict[str, str], emu: Any
) -> None:
    job, output, before = _good_output(tmp_path, 100)
    write_corpus(tmp_path / "corpus.csv", 150)  # 50 new rows to write
    with read_only_folder(output.parent):
        code, out, err = run_process(job, env)
        line = assert_one_line_error(code, err)
        assert str(output.parent) in line or str(output) in line, line
        assert output.read_bytes() == before
    # once writable again, the next run finishes without sending the 50 rows twice
    sent = items_sent(emu)
    code, out, err = run_process(job, env)
    assert code == 0, out + err
    assert read_everywhere(output) == 150
    assert items_sent(emu) == sent
    assert leftovers(output.parent) == []


@pytest.mark.parametrize("where", ["journal", "final-file"])
def test_full_disk_is_one_line_error_and_keeps_the_output(
    tmp_path: Path, env: dict[str, str], emu: Any, where: str
) -> None:
    out_dir = tmp_path / "out"
    _mount_tmpfs(out_dir, "1m")
    try:
        # 200 rows are ~300 kB of Parquet; the new rows' journal and the merged file
        # together are more than the 1 MB left.
        job, output, before = _good_output(tmp_path, 200)
        grow = 2_000 if where == "journal" else 560
        write_corpus(tmp_path / "corpus.csv", grow)
        code, _out, err = run_process(job, env, timeout=60)
        line = assert_one_line_error(code, err)
        assert "no space left" in line.lower(), line
        assert ("journal" in line) == (where == "journal"), line
        assert output.read_bytes() == before
        assert read_everywhere(output) == 200
        # space freed: the next run finishes from what was kept (a journal torn by the
        # full disk included) and pays at most for the rows it had not kept (the failed
        # run's answers are also in the result cache, outside the full disk)
        sent = items_sent(emu)
        subprocess.run(["mount", "-o", "remount,size=16m", str(out_dir)], check=True)
        code, out, err = run_process(job, env, timeout=60)
        assert code == 0, out + err
        assert read_everywhere(output) == grow
        kept = int(re.search(r"skipped ([\d,]+)", out).group(1).replace(",", ""))  # type: ignore[union-attr]
        assert kept >= 200
        assert items_sent(emu) - sent <= grow - kept
        assert leftovers(out_dir) == []
    finally:
        _umount(out_dir)


def test_disk_full_while_many_results_arrive_stops_instead_of_hanging(
    tmp_path: Path, env: dict[str, str], emu: Any
) -> None:
    out_dir = tmp_path / "out"
    _mount_tmpfs(out_dir, "128k")
    try:
        pl.DataFrame(
            {"doc_id": list(range(3_000)), "text": [f"text number {i}" for i in range(3_000)]}
        ).write_csv(tmp_path / "corpus.csv")
        # one row per request: hundreds of results queue up behind the failed journal
        job = write_job(
            tmp_path, limits="{batch_size: 1, concurrency: 16, requests_per_minute: 60000}"
        )
        try:
            code, _out, err = run_process(job, env, timeout=8)
        except subprocess.TimeoutExpired:
            pytest.fail("the run hung after its journal could not be written")
        line = assert_one_line_error(code, err)
        assert "space" in line.lower(), line
    finally:
        _umount(out_dir)
