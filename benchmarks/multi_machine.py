"""Issue 17's proof: 4 worker processes (standing in for 4 machines, each with its own state
folder) run the 4 shards of one job against one emulator with one PostgreSQL ledger.

Day after emulated day, the 4 ``pipelines run --shard I/4`` processes start together; each
stops at the shared daily cap (exit 3) or when its shard is done (exit 0); the day is then
advanced. On the last day one worker is killed with SIGKILL mid-run and started again: it
resumes from its journal. Measured: neurons billed each day (≤ the cap; ≥ 0.97 × the cap on
every full day), the combined request rate of each full day over its middle 80 % of
requests (≥ 0.95 of the account's per-minute limit; the emulator's counter polled every
50 ms), 3021s provoked (0), and the output: every row exactly once.

    python3 benchmarks/multi_machine.py [--short] [--ledger-url postgresql://...]

Without ``--ledger-url`` it starts a PostgreSQL of its own (tests/pg_fixture.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import polars as pl

LARGE = "@cf/baai/bge-large-en-v1.5"  # 1,500 rpm published; 18,582 neurons per M tokens
CATALOG_RPM = 1500
WORDS = "budget neuron river city data model cloud worker night batch parquet token".split()
SHARDS = 4


class Emulator(Protocol):
    base_url: str

    def stats(self) -> dict[str, Any]: ...
    def advance_day(self) -> str: ...


@dataclass
class Proof:
    """What the runs did."""

    cap: float
    rpm: float
    billed: list[float] = field(default_factory=list)  # per emulated day
    full_days: list[bool] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)  # requests per minute, full days
    codes: list[list[int]] = field(default_factory=list)
    error_codes: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    unique: int = 0
    items_sent: int = 0
    killed: bool = False

    def summary(self) -> dict[str, Any]:
        full = [b for b, f in zip(self.billed, self.full_days, strict=True) if f]
        return {
            "days": len(self.billed),
            "max billed / cap": max(self.billed) / self.cap,
            "min full day / cap": min(full) / self.cap if full else None,
            "min rate / rpm": min(self.rates) / self.rpm if self.rates else None,
            "3021": self.error_codes.get("3021", 0),
            "rows": self.rows,
            "unique": self.unique,
            "items sent": self.items_sent,
            "killed": self.killed,
        }


def corpus(path: Path, rows: int) -> None:
    texts = [
        " ".join(WORDS[(i * 7 + k * k) % len(WORDS)] for k in range(90)) + f" r{i}"
        for i in range(rows)
    ]
    pl.DataFrame({"doc_id": [f"r{i}" for i in range(rows)], "text": texts}).write_csv(path)


def job_file(folder: Path, rows: int, cap: float, rpm: float) -> Path:
    corpus(folder / "in.csv", rows)
    path = folder / "shared.yaml"
    path.write_text(
        "name: shared\n"
        "source: {kind: csv, path: in.csv, key: doc_id}\n"
        f'task: {{kind: embed, model: "{LARGE}", input: text}}\n'
        "output: {path: out/shared.parquet, keep: [doc_id]}\n"
        f"limits: {{requests_per_minute: {int(rpm)}, concurrency: 4, batch_size: 10}}\n"
        f"budget: {{daily_neurons: {int(cap)}}}\n"
    )
    return path


def start(emu: Emulator, ledger_url: str, job: Path, shard: int, extra: list[str]) -> Any:
    """One worker: its own state folder (cache, locks, logs), the shared ledger."""
    state = job.parent / f"machine-{shard}"
    env = {
        **os.environ,
        "CLOUDFLARE_ACCOUNT_ID": "shared-proof",
        "CLOUDFLARE_API_TOKEN": "t0ken",
        "CLOUDFLARE_API_BASE_URL": emu.base_url,
        "PIPELINES_STATE_DIR": str(state),
        "PIPELINES_CONFIG": str(state / "none.yaml"),
        "PIPELINES_LEDGER_URL": ledger_url,
    }
    env.pop("CLOUDFLARE_API_TOKEN_FILE", None)
    cmd = [sys.executable, "-m", "pipelines", "run", "--no-progress"]
    cmd += [*extra, "--shard", f"{shard}/{SHARDS}", str(job)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


class Counter:
    """The emulator's request count, polled every 50 ms: ``(monotonic, count)`` samples."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.samples: list[tuple[float, int]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._done.is_set():
            self.samples.append((time.monotonic(), int(self.emu.stats()["requests_total"])))
            self._done.wait(0.05)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def rate(self, trim: float = 0.1) -> float:
        """Requests per minute over the middle of the day's requests (the first and last
        ``trim`` of them left out: workers starting and stopping, not the shared pace)."""
        if len(self.samples) < 2:
            return 0.0
        first, last = self.samples[0][1], self.samples[-1][1]
        low, high = first + (last - first) * trim, last - (last - first) * trim
        inside = [(t, n) for t, n in self.samples if low <= n <= high]
        if len(inside) < 2:
            return 0.0
        (t0, n0), (t1, n1) = inside[0], inside[-1]
        return (n1 - n0) / (t1 - t0) * 60 if t1 > t0 else 0.0


def one_day(emu: Emulator, url: str, job: Path, kill: bool, proof: Proof) -> list[int]:
    counter = Counter(emu)
    workers = [start(emu, url, job, i, []) for i in range(SHARDS)]
    if kill:
        # once the day's work is under way, SIGKILL one worker and start it again
        begun = emu.stats()["requests_total"]
        while emu.stats()["requests_total"] < begun + 20 and workers[0].poll() is None:
            time.sleep(0.05)
        if workers[0].poll() is None:
            os.kill(workers[0].pid, signal.SIGKILL)
            workers[0].communicate()
            proof.killed = True
            workers[0] = start(emu, url, job, 0, [])
    outs = [w.communicate(timeout=600) for w in workers]
    counter.stop()
    codes = [w.returncode for w in workers]
    for code, (_, err) in zip(codes, outs, strict=True):
        if code not in (0, 3):
            raise AssertionError(f"a worker failed ({code}): {err.decode()[-2000:]}")
    full = 3 in codes
    if full:
        proof.rates.append(counter.rate())
    return codes


def prove(
    emu: Emulator, ledger_url: str, folder: Path, *, rows: int, cap: float, rpm: float
) -> Proof:
    """Run the 4 shards day after day until every worker is done; kill one on the last."""
    job = job_file(folder, rows, cap, rpm)
    proof = Proof(cap=cap, rpm=rpm)
    done_neurons = 0.0
    for _day in range(10):
        # the last day is the one whose remaining work fits in the cap
        left = _neurons_left(emu, rows, done_neurons)
        codes = one_day(emu, ledger_url, job, kill=left < cap * 0.9, proof=proof)
        stats = emu.stats()
        proof.billed.append(float(stats["neurons_today"]))
        proof.full_days.append(3 in codes)
        proof.codes.append(codes)
        done_neurons += float(stats["neurons_today"])
        if all(code == 0 for code in codes):
            break
        emu.advance_day()
    stats = emu.stats()
    proof.error_codes = {str(k): int(v) for k, v in stats["error_codes"].items()}
    proof.items_sent = int(stats["models"][LARGE]["items"])
    frame = pl.read_parquet(folder / "out" / "shared.parquet" / "*.parquet")
    proof.rows, proof.unique = frame.height, frame["doc_id"].n_unique()
    return proof


def _neurons_left(emu: Emulator, rows: int, done: float) -> float:
    # every row costs about the same: what is left is the rows not yet answered
    sent = int(emu.stats()["models"].get(LARGE, {}).get("items", 0))
    per_row = done / sent if sent else float("inf")
    return (rows - sent) * per_row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="a smaller job (CI)")
    parser.add_argument("--ledger-url", default=None)
    parser.add_argument("--rpm-scale", type=float, default=0.4, help="of the 1,500 rpm")
    args = parser.parse_args()
    rows, cap = (2_200, 1_600.0) if args.short else (9_000, 6_500.0)
    rpm_scale = args.rpm_scale
    rpm = CATALOG_RPM * rpm_scale

    import tempfile
    from contextlib import ExitStack

    from common import result

    from pipelines.emulator import EmulatorConfig, running_emulator

    with ExitStack() as stack:
        url = args.ledger_url
        if url is None:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
            from pg_fixture import postgres_server

            url = stack.enter_context(postgres_server()).database()
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        config = EmulatorConfig(daily_neurons=cap, rpm_scale=rpm_scale)
        emu = stack.enter_context(running_emulator(config))
        proof = prove(emu, url, folder, rows=rows, cap=cap, rpm=rpm)
    s = proof.summary()
    bench = "multi_machine"
    result(bench, "max billed / cap", s["max billed / cap"], "<= 1", s["max billed / cap"] <= 1)
    full = s["min full day / cap"] or 0.0
    result(bench, "min full day / cap", full, ">= 0.97", full >= 0.97)
    rate = s["min rate / rpm"] or 0.0
    result(bench, "combined rate / rpm", rate, ">= 0.95", rate >= 0.95)
    result(bench, "3021 provoked", s["3021"], "0", s["3021"] == 0)
    once = s["rows"] == rows and s["unique"] == rows
    result(bench, "rows exactly once", float(once), "1", once, note=f"killed={proof.killed}")


if __name__ == "__main__":
    main()
