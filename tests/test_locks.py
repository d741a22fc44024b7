"""One run per output: a second run refuses at once; a killed holder's lock is taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.core.errors import JobError
from pipelines.ops.locks import JobLock, JobRunning, current_holder, lock_path_for, read_holder
from pipelines.output.identity import Fingerprint
from pipelines.output.store import OutputStore

HOLDER = """
import sys, time
from pathlib import Path
from pipelines.output.store import OutputStore
from pipelines.ops.locks import JobLock
lock = JobLock(Path(sys.argv[1]), "embed-corpus").acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_second_run_refuses_at_once_and_kill_9_frees_the_lock(tmp_path: Path) -> None:
    output = tmp_path / "out" / "result.parquet"
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(output)], stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "locked"
            # refused, not made to wait: the holder keeps the lock for 120 s
            with pytest.raises(JobRunning) as refused:
                JobLock(output, "embed-corpus").acquire()
            message = refused.value.message
            assert message.startswith(f"job embed-corpus is already running (pid {holder.pid} ")
            assert " UTC); wait for it or stop it" in message
            assert isinstance(refused.value, JobError) and refused.value.exit_code == 2
            found = current_holder(output)
            assert found is not None and found.pid == holder.pid
        finally:
            holder.kill()  # SIGKILL: no cleanup code runs
            holder.wait()
    assert current_holder(output) is None  # the record is left, but its pid is dead
    with JobLock(output, "embed-corpus") as lock:
        assert lock.took_over is not None and lock.took_over.pid == holder.pid
        assert lock.notice is not None
        assert lock.notice.startswith(f"took over a stale lock from pid {holder.pid}")
        holder_now = read_holder(lock.path)
        assert holder_now is not None and holder_now.pid == os.getpid()


def test_clean_release_leaves_nothing_to_take_over(tmp_path: Path) -> None:
    output = tmp_path / "result.parquet"
    with JobLock(output, "a") as first:
        assert first.took_over is None
        with pytest.raises(JobRunning, match="already running in this process"):
            JobLock(output, "a").acquire()
    assert lock_path_for(output).exists()
    assert read_holder(lock_path_for(output)) is None
    with JobLock(output, "a") as again:
        assert again.took_over is None and again.notice is None


def test_other_job_on_the_same_output_is_named(tmp_path: Path) -> None:
    output = tmp_path / "shared.parquet"
    with JobLock(output, "job-a"), pytest.raises(JobRunning) as refused:
        JobLock(output, "job-b").acquire()
    assert f"{output} is in use by job job-a (pid {os.getpid()}" in refused.value.message


def test_stale_record_of_a_dead_pid_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    output = tmp_path / "result.parquet"
    record = {
        "pid": pid,
        "host": socket.gethostname(),
        "job": "x",
        "started_at": "2026-01-02T03:04:05+00:00",
    }
    lock_path_for(output).write_text(json.dumps(record))
    assert current_holder(output) is None
    lock = JobLock(output, "x").acquire()
    try:
        assert lock.took_over is not None and lock.took_over.pid == pid
        assert lock.notice is not None and "2026-01-02 03:04 UTC" in lock.notice
    finally:
        lock.release()
    assert not lock.held


def test_fresh_emptying_the_work_folder_keeps_the_lock(tmp_path: Path) -> None:
    output = tmp_path / "result.parquet"
    with JobLock(output, "a"):
        OutputStore(output, fingerprint=Fingerprint({"job": "a"}), meta={}).open(
            fresh=True
        )  # what --fresh does
        with pytest.raises(JobRunning):
            JobLock(output, "a").acquire()
