"""One run per output at a time: an OS lock on ``.<output name>.lock`` beside the output.

The lock is ``flock(LOCK_EX | LOCK_NB)`` on an open file, so the kernel drops it when the
holder exits in any way, ``kill -9`` included; a second run refuses at once instead of
waiting. The file also records who holds it (pid, host, start) for the refusal message;
it is emptied on a clean release, so a record found on acquiring names a run that died.

The file sits beside the output rather than in the work folder because ``--fresh``
empties the work folder, which would delete a held lock and let a second run in.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from pipelines.core.errors import JobError, OutputError
from pipelines.core.processes import pid_alive
from pipelines.job.paths import job_paths

if TYPE_CHECKING:
    from pipelines.job.spec import Job

# Where Windows locks a byte: past any content, so the holder record stays readable.
_WIN_LOCK_OFFSET = 1 << 30


class JobRunning(JobError):
    """Another run holds the job's lock (exit 2)."""


def lock_path_for(output: Path) -> Path:
    """``.<output name>.lock`` next to the output."""
    return job_paths(output).lock


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or last held) a lock."""

    pid: int
    host: str
    job: str
    started_at: datetime

    def describe(self) -> str:
        """``pid 1234 since 09:12 UTC`` (with the day when not today, the host when not ours)."""
        when = self.started_at.astimezone(UTC)
        since = when.strftime("%H:%M UTC")
        if when.date() != datetime.now(UTC).date():
            since = when.strftime("%Y-%m-%d %H:%M UTC")
        where = "" if self.host == socket.gethostname() else f" on {self.host}"
        return f"pid {self.pid}{where} since {since}"

    def is_alive(self) -> bool:
        """False only when it is certainly gone: a dead pid on this host."""
        if self.host != socket.gethostname():
            return True
        return pid_alive(self.pid)


def _parse_holder(text: str) -> LockHolder | None:
    try:
        raw = json.loads(text)
        return LockHolder(
            pid=int(raw["pid"]),
            host=str(raw["host"]),
            job=str(raw.get("job", "")),
            started_at=datetime.fromisoformat(raw["started_at"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


def read_holder(path: Path) -> LockHolder | None:
    """The holder recorded in a lock file, if any (held or left behind by a dead run)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return _parse_holder(fh.read(4096))
    except OSError:
        return None


def current_holder(output: Path) -> LockHolder | None:
    """The run holding ``output``'s lock, judged from the record without touching the lock.

    Taking the lock to test it could make a run starting at that instant refuse, so a
    status display reads the record: present and not certainly dead means running.
    """
    holder = read_holder(lock_path_for(output))
    return holder if holder is not None and holder.is_alive() else None


def _try_flock(fd: int) -> bool:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _WIN_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_fd(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode("utf-8", "replace")


class JobLock:
    """Exclusive lock on a job's output for the length of a run.

    ``with JobLock.for_job(job) as lock:`` raises :class:`JobRunning` at once when another
    live run holds it. ``lock.took_over`` names the dead run whose lock was taken over.
    """

    def __init__(self, output_path: Path, job_name: str) -> None:
        self.output = output_path
        self.job = job_name
        self.path = lock_path_for(output_path)
        self.took_over: LockHolder | None = None
        self._fd: int | None = None

    @classmethod
    def for_job(cls, job: Job) -> JobLock:
        """The lock of ``job``'s output."""
        return cls(job.output_path, job.name)

    @property
    def held(self) -> bool:
        return self._fd is not None

    @property
    def notice(self) -> str | None:
        """A line for the user when a dead run's lock was taken over."""
        if self.took_over is None:
            return None
        return (
            f"took over a stale lock from pid {self.took_over.pid} "
            f"({self.took_over.describe()}, no longer running)"
        )

    def _refusal(self, fd: int) -> JobRunning:
        holder = None
        # The holder writes its record just after locking: give it a moment.
        for _ in range(10):
            holder = _parse_holder(_read_fd(fd))
            if holder is not None:
                break
            time.sleep(0.01)
        if holder is None:
            who = f"job {self.job} is already running"
        elif holder.job and holder.job != self.job:
            who = f"{self.output} is in use by job {holder.job} ({holder.describe()})"
        elif holder.pid == os.getpid() and holder.host == socket.gethostname():
            who = f"job {self.job} is already running in this process"
        else:
            who = f"job {self.job} is already running ({holder.describe()})"
        return JobRunning(f"{who}; wait for it or stop it")

    def acquire(self) -> JobLock:
        """Take the lock or raise :class:`JobRunning` without waiting."""
        if self._fd is not None:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"cannot create {self.path.parent} ({exc.strerror or exc}); "
                "choose a writable output.path"
            ) from exc
        while True:
            try:
                # never through a link: truncating it would empty someone else's file
                flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                fd = os.open(self.path, flags, 0o644)
            except OSError as exc:
                raise OutputError(
                    f"cannot open the lock file {self.path} ({exc.strerror or exc})"
                ) from exc
            if not _try_flock(fd):
                error = self._refusal(fd)
                os.close(fd)
                raise error
            # Someone may have removed the file between our open and lock: then the lock
            # guards an orphan inode nobody else will see, so start over on the new file.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        left = _parse_holder(_read_fd(fd))
        self.took_over = left  # a record left behind: its run died without releasing
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "job": self.job,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        data = json.dumps(record).encode()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)
        self._fd = fd
        return self

    def release(self) -> None:
        """Empty the record and drop the lock; the file stays (unlinking would race)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)

    def __enter__(self) -> JobLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __del__(self) -> None:
        # A forgotten lock must not outlive its object and block the job until exit.
        if getattr(self, "_fd", None) is not None:
            self.release()
