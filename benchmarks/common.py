"""Shared pieces of the benchmarks: an emulator in its own process, job files, text inputs,
``pipelines run`` as a measured child process, and the ``RESULT`` lines that
``run_all.py`` and the CI smoke test read.

The emulator always runs as a separate process (``python -m pipelines emulator --port 0``)
so its CPU time and memory never count as the client's, and it does not compete with the
client for the GIL.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import yaml

ROOT = Path(__file__).resolve().parent.parent
BGE = "@cf/baai/bge-small-en-v1.5"
DISTILBERT = "@cf/huggingface/distilbert-sst-2-int8"

WORDS = (
    "river mountain city market music garden ocean winter summer station library bridge "
    "forest harbour village engine letter window doctor teacher coffee morning evening "
    "journey picture kitchen history science weather holiday football camera"
).split()


def text_frame(n: int, seed: int = 0) -> pl.DataFrame:
    """``n`` distinct short English-like texts (8–20 words, ~110 bytes) with a ``doc_id``;
    the first rows are the same whatever ``n``.

    Built with vectorised polars expressions (about a second per million rows). polars'
    hash picks the words: stable within a polars version, not across versions.
    """
    ids = pl.int_range(0, n, eager=True, dtype=pl.Int64).alias("doc_id")
    vocab = list(range(len(WORDS)))
    length = pl.col("doc_id").hash(seed=seed + 99) % 13 + 8
    parts = [
        pl.when(pl.lit(k) < length).then(
            (pl.col("doc_id").hash(seed=seed * 31 + k) % len(WORDS)).replace_strict(
                vocab, WORDS, return_dtype=pl.Utf8
            )
        )
        for k in range(20)
    ]
    text = pl.concat_str(parts, separator=" ", ignore_nulls=True)
    text = text + pl.lit(" #") + pl.col("doc_id").cast(pl.Utf8)
    return pl.DataFrame(ids).select(pl.col("doc_id"), text.alias("text"))


def data_dir() -> Path:
    """Where generated inputs are cached between runs (not in the repository)."""
    default = Path(tempfile.gettempdir()) / "pipelines-bench-data"
    folder = Path(os.environ.get("PIPELINES_BENCH_DATA", default))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# -- the emulator in its own process ------------------------------------------------------


@dataclass
class Emulator:
    """A ``pipelines emulator`` child process."""

    process: subprocess.Popen[str]
    url: str

    @property
    def base_url(self) -> str:
        return f"{self.url}/client/v4"

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/__emulator/stats", timeout=10.0)
        response.raise_for_status()
        out: dict[str, Any] = response.json()
        return out


class RequestCounter:
    """Polls the emulator's answered-request count every ``every`` seconds in a thread:
    ``samples`` holds ``(time.monotonic(), count)`` pairs."""

    def __init__(self, emu: Emulator, every: float = 0.05) -> None:
        self.emu = emu
        self.every = every
        self.samples: list[tuple[float, int]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        with httpx.Client(timeout=10.0) as client:
            while not self._done.is_set():
                stats = client.get(f"{self.emu.url}/__emulator/stats").json()
                self.samples.append((time.monotonic(), int(stats["requests_total"])))
                time.sleep(self.every)

    def __enter__(self) -> RequestCounter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.samples.append((time.monotonic(), int(self.emu.stats()["requests_total"])))

    def first(self) -> float:
        """When the first answer had been counted."""
        return next(t for t, c in self.samples if c > 0)

    def last(self) -> float:
        """When the final count was first seen."""
        final = self.samples[-1][1]
        return next(t for t, c in self.samples if c >= final)

    def count_at(self, t: float) -> float:
        """The count at ``t``, interpolated between polls."""
        times = [s[0] for s in self.samples]
        i = bisect.bisect_left(times, t)
        if i == 0:
            return float(self.samples[0][1])
        if i >= len(self.samples):
            return float(self.samples[-1][1])
        (t0, c0), (t1, c1) = self.samples[i - 1], self.samples[i]
        return c0 + (c1 - c0) * (t - t0) / (t1 - t0)


@contextmanager
def emulator_process(**knobs: float | int | str) -> Iterator[Emulator]:
    """Start ``python -m pipelines emulator --port 0`` with ``knobs`` as flags
    (``rpm_scale=0.3`` → ``--rpm-scale 0.3``) and wait for its ``listening on`` line."""
    cmd = [sys.executable, "-m", "pipelines", "emulator", "--port", "0"]
    for name, value in knobs.items():
        cmd += [f"--{name.replace('_', '-')}", str(value)]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        url = None
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            found = re.search(r"listening on (http://\S+)", line)
            url = found.group(1) if found else None
        if url is None:
            raise RuntimeError(f"the emulator did not start: {' '.join(cmd)}")
        yield Emulator(process, url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- jobs and runs --------------------------------------------------------------------------


def write_job(
    folder: Path,
    *,
    model: str,
    kind: str,
    source: Path,
    rpm: int | None = None,
    concurrency: int = 16,
    name: str = "bench",
    extra: dict[str, Any] | None = None,
) -> Path:
    """A job file reading ``source`` (Parquet, key ``doc_id``) into ``folder/out``."""
    job: dict[str, Any] = {
        "name": name,
        "provider": "cloudflare",
        "source": {"kind": "parquet", "path": str(source), "key": "doc_id"},
        "task": {"kind": kind, "model": model, "input": "text"},
        "output": {"path": str(folder / "out" / f"{name}.parquet")},
        "limits": {"concurrency": concurrency},
        "budget": {"daily_neurons": 10**12},
    }
    if rpm is not None:
        job["limits"]["requests_per_minute"] = rpm
    for section, values in (extra or {}).items():
        job.setdefault(section, {}).update(values)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def run_env(emu: Emulator, state: Path) -> dict[str, str]:
    """The environment of a ``pipelines run`` against ``emu`` with its own state folder
    (its own ledger and result cache, so nothing is answered from an earlier run)."""
    env = dict(os.environ)
    env.update(
        CLOUDFLARE_ACCOUNT_ID="bench",
        CLOUDFLARE_API_TOKEN="bench",
        CLOUDFLARE_API_BASE_URL=emu.base_url,
        PIPELINES_STATE_DIR=str(state),
        PIPELINES_CONFIG=str(state / "no-config.yaml"),
    )
    env.pop("CLOUDFLARE_API_TOKEN_FILE", None)
    return env


@dataclass
class Measured:
    """A finished child process: exit code, output, wall time and its own resource use."""

    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    cpu_s: float  # user + system
    max_rss_mb: float
    started: float = 0.0  # time.monotonic() at spawn


# Linux copies the parent's peak RSS into a child's at exec (``ru_maxrss`` of a process
# forked from this big one starts at our size), so a tiny launcher process starts the
# measured command and reports its rusage: the command's peak is then its own.
_LAUNCHER = """
import json, os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, ru = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump([os.waitstatus_to_exitcode(status), ru.ru_utime + ru.ru_stime, ru.ru_maxrss], f)
"""


def measured_run(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> Measured:
    """Run ``cmd`` and read its own CPU time and peak RSS."""
    with (
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
        tempfile.TemporaryDirectory() as tmp,
    ):
        report = Path(tmp) / "rusage.json"
        launcher = [sys.executable, "-S", "-c", _LAUNCHER, str(report)]
        start = time.monotonic()
        subprocess.run([*launcher, *cmd], env=env, cwd=cwd, stdout=out, stderr=err, check=False)
        wall = time.monotonic() - start
        code, cpu, max_rss_kb = json.loads(report.read_text())
        out.seek(0)
        err.seek(0)
        return Measured(
            returncode=code,
            stdout=out.read(),
            stderr=err.read(),
            wall_s=wall,
            cpu_s=cpu,
            max_rss_mb=max_rss_kb / 1024,  # kilobytes on Linux
            started=start,
        )


def pipelines_run(job: Path, env: dict[str, str], *args: str) -> Measured:
    """``pipelines run --no-progress JOB ARGS`` as a measured child process."""
    cmd = [sys.executable, "-m", "pipelines", "run", "--no-progress", str(job), *args]
    return measured_run(cmd, env)


def summary_figure(run: Measured, name: str) -> float:
    """A figure from ``pipelines run``'s summary line (``rows done 1,234``, ``wall 3.2s``)."""
    found = re.search(rf"{name} ([\d,.]+)", run.stdout)
    if found is None:
        raise SystemExit(f"no {name!r} in the run summary: {run.stdout!r}")
    return float(found.group(1).replace(",", ""))


def check_run(run: Measured, allowed: tuple[int, ...] = (0,)) -> None:
    """Fail loudly when a run did not end as the benchmark expects."""
    if run.returncode not in allowed:
        sys.stderr.write(run.stdout + run.stderr)
        raise SystemExit(f"pipelines run exited {run.returncode} (expected {allowed})")


# -- reporting ------------------------------------------------------------------------------


def result(
    bench: str,
    figure: str,
    value: float,
    goal: str,
    met: bool | None,
    *,
    shown: str | None = None,
    note: str = "",
    extra: dict[str, Any] | None = None,
) -> None:
    """Print the human line and the machine-readable ``RESULT {json}`` line for one goal
    (``met`` None: a figure without a goal)."""
    text = shown if shown is not None else f"{value:.4g}"
    verdict = "informational" if met is None else "met" if met else "MISSED"
    print(f"{bench} {figure}: {text} (goal {goal}): {verdict}" + (f" — {note}" if note else ""))
    record = {
        "bench": bench,
        "figure": figure,
        "value": value,
        "shown": text,
        "goal": goal,
        "met": met,
        "note": note,
        **(extra or {}),
    }
    print("RESULT " + json.dumps(record, ensure_ascii=False), flush=True)


def parse_results(output: str) -> list[dict[str, Any]]:
    """The ``RESULT`` records in a benchmark's output."""
    return [
        json.loads(line[len("RESULT ") :])
        for line in output.splitlines()
        if line.startswith("RESULT ")
    ]
