"""A local Workers AI emulator, faithful to the REST API: envelopes, limits, metering, faults.

::

    from pipelines.emulator import EmulatorConfig, running_emulator

    with running_emulator(EmulatorConfig(daily_neurons=500)) as emu:
        url = f"{emu.base_url}/accounts/acct/ai/run/@cf/baai/bge-small-en-v1.5"
        ...
        emu.stats()["neurons_today"]

Modules: ``config`` (knobs), ``clock`` (real or fake time), ``app`` (routes), ``service``
(checks and billing), ``inputs``/``outputs``/``vectors``/``speech``/``languages`` (models),
``chat``/``json_values`` (text generation, JSON mode), ``ledger`` (day, usage, per-minute
windows), ``faults``, ``batch`` (Batch API), ``graphql`` (usage query), ``envelope`` (wire
format and error codes), ``server`` (uvicorn).
"""

from __future__ import annotations

from pipelines.emulator.app import ConnectionDropped, EmulatorApp, build_app
from pipelines.emulator.clock import Clock, FakeClock, SystemClock
from pipelines.emulator.config import EmulatorConfig
from pipelines.emulator.server import RunningEmulator, running_emulator, serve

__all__ = [
    "Clock",
    "ConnectionDropped",
    "EmulatorApp",
    "EmulatorConfig",
    "FakeClock",
    "RunningEmulator",
    "SystemClock",
    "build_app",
    "running_emulator",
    "serve",
]
