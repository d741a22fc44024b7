"""``pipelines run JOB --ray [ADDRESS]`` (issue 17): Ray places the N shards of each job on
a cluster, or on a Ray started on this machine for the run.

Each shard is one Ray task that runs ``--shard I/N`` of the job exactly as a process of its
own would: the shared ledger and rate limiter keep the shards together under the account's
cap and per-minute limit, and the shard's journal makes it exactly once. A task whose worker
dies (a node lost, kill -9) is started again by Ray itself (``max_retries``); the new
attempt resumes the shard from its journal. Jobs of the local provider send their inference
to a pool of actors that hold the models, one a CPU beyond the shards', spread over the
nodes (:mod:`pipelines.providers.local_ray`). Ray is an optional extra
(``pip install 'pipelines[ray]'``).

Credentials are never handed to Ray (its runtime environment is stored in the cluster's
control store): a local Ray's workers inherit this process's environment, and the nodes of
a cluster read their own (``CLOUDFLARE_API_TOKEN``, ``PIPELINES_LEDGER_URL``, ...).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from typing import Any

from pipelines.core.errors import JobError, PipelinesError
from pipelines.core.shard import Shard
from pipelines.job.spec import Job
from pipelines.run.report import RunReport
from pipelines.run.settings import RunSettings

# A shard whose worker died is run again this many times (each resumes from its journal).
SHARD_RETRIES = 3
LOCAL = "local"


def _run_shard(job: Job, settings: RunSettings) -> RunReport:
    """One shard, in a Ray worker: the same launch as ``pipelines run --shard I/N``."""
    from pipelines.ops.jobset import arun_jobs

    (report,) = asyncio.run(arun_jobs([job], settings, raise_errors=False))
    return report


def _uses_local_models(jobs: list[Job], settings: RunSettings) -> bool:
    from pipelines.job.models import job_model
    from pipelines.providers.registry import choose

    for job in jobs:
        model = job_model(job)
        base = settings.base_url or job.base_url
        if choose(job.provider, settings.provider, base, model).name == "local":
            return True
    return False


def _inference_pool(ray: Any, count: int) -> tuple[Any, ...]:
    """``count`` actors holding the local models, spread over the nodes."""
    from pipelines.providers.local_ray import LocalModels

    actor = ray.remote(num_cpus=1, max_restarts=SHARD_RETRIES)(LocalModels)
    return tuple(actor.options(scheduling_strategy="SPREAD").remote() for _ in range(count))


def _connect(address: str, shards: int, extra_cpus: int) -> Any:
    try:
        import ray
    except ImportError:
        raise JobError("--ray needs Ray: pip install 'pipelines[ray]'") from None
    if address == LOCAL:
        # a Ray of our own for the run: one CPU per shard, so every shard runs at once
        ray.init(num_cpus=shards + extra_cpus, include_dashboard=False, log_to_driver=False)
    else:
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise JobError(f"--ray {address}: cannot reach the Ray cluster: {first}") from None
    return ray


def run_on_ray(
    jobs: list[Job], settings: RunSettings, *, address: str, shards: int
) -> list[RunReport]:
    """Run every job as ``shards`` Ray tasks; the shards' reports, job by job."""
    if shards < 1:
        raise JobError(f"--shards must be at least 1, not {shards}")
    if address != LOCAL and not os.environ.get("PIPELINES_LEDGER_URL"):
        # shards on other machines would each count against a ledger of their own
        raise JobError(
            "--ray with a cluster needs the shared ledger: set PIPELINES_LEDGER_URL "
            "(postgresql://...) here and on every node"
        )
    from pipelines.ops.launch import check_other_shards

    for job in jobs:  # before Ray starts: the same refusal as each shard's
        check_other_shards(job.sharded(Shard(0, shards)))
    local = _uses_local_models(jobs, settings)
    ray = _connect(address, shards, shards if local else 0)
    try:
        if local:
            # the models on every node's CPUs: what the cluster has beyond the shards
            cpus = int(ray.cluster_resources().get("CPU", 1))
            settings = replace(settings, inference=_inference_pool(ray, max(1, cpus - shards)))
        task = ray.remote(max_retries=SHARD_RETRIES, num_cpus=1)(_run_shard)
        refs = [
            task.remote(job.sharded(Shard(i, shards)), settings)
            for job in jobs
            for i in range(shards)
        ]
        try:
            return list(ray.get(refs))
        except ray.exceptions.RayError as exc:
            # a shard that died more than SHARD_RETRIES times, or a cluster that went away:
            # what every shard journalled is kept, and the next run resumes it
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise PipelinesError(
                f"a shard could not be finished on Ray ({type(exc).__name__}: {first}); "
                "what the shards wrote is kept, run again to resume"
            ) from None
    finally:
        ray.shutdown()
