"""Issue 17's proof (benchmarks/multi_machine.py, short): 4 worker processes, standing in
for 4 machines, run the 4 shards of one job against one emulator with one PostgreSQL
ledger and rate limiter, day after emulated day, one of them killed with SIGKILL and
started again on the last day. Together they never bill more than the cap, fill every
full day to ≥ 0.97 of it at ≥ 0.95 of the account's per-minute limit without one 3021, and
write every row exactly once."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from pipelines.emulator.server import RunningEmulator

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
ROWS, CAP, RPM_SCALE = 2_200, 1_600.0, 0.4

pytestmark = [pytest.mark.slow, pytest.mark.emulator(daily_neurons=CAP, rpm_scale=RPM_SCALE)]


def _bench() -> Any:
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("multi_machine", BENCH / "multi_machine.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["multi_machine"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_four_machines_share_one_cap_and_one_rate(
    tmp_path: Path, emu: RunningEmulator, pg_url: str
) -> None:
    bench = _bench()
    rpm = bench.CATALOG_RPM * RPM_SCALE
    proof = bench.prove(emu, pg_url, tmp_path, rows=ROWS, cap=CAP, rpm=rpm)
    summary = proof.summary()
    print(summary, proof.billed, proof.rates, proof.codes)
    assert all(b <= CAP + 1e-6 for b in proof.billed), proof.billed
    assert summary["min full day / cap"] is not None and summary["min full day / cap"] >= 0.97
    assert summary["min rate / rpm"] >= 0.95, proof.rates
    assert summary["3021"] == 0 and "3036" not in proof.error_codes, proof.error_codes
    assert proof.killed
    assert (proof.rows, proof.unique) == (ROWS, ROWS)
