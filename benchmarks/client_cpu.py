"""P3: client CPU seconds per 1,000 texts embedded, ``pipelines run`` ÷ the script a user
would write without it: LiteLLM ``aembedding`` under ``asyncio.gather`` with a semaphore
(goal ≤ 0.5).

Every client runs in its own process and its CPU time (user + system) is read with
``wait4``; the emulator is a separate process whose CPU is not counted. All clients embed
the same Parquet file of distinct texts with bge-small, 100 texts per request, 16 requests
in flight, no latency and no rate limit in the way, and write the vectors to Parquet.

LiteLLM's ``cloudflare/`` provider has no embedding route ("Unmapped LLM provider for this
endpoint"), so the LiteLLM client uses its ``openai/`` provider against Workers AI's
OpenAI-compatible endpoint, ``{api}/accounts/{id}/ai/v1/embeddings``, which is what
Cloudflare documents for OpenAI clients (up to 100 inputs per request for bge, like ours).
Without LiteLLM installed (``pip install -e '.[bench]'``) the baseline falls back to a
plain httpx + asyncio.gather + semaphore script against ``/ai/run/{model}``, and says so.

Two input sizes give the marginal cost per 1,000 texts (fixed start-up costs, imports
included, cancel out) next to the whole-run cost; each measurement is the minimum of
``--repeat`` runs, clients interleaved.

    python3 benchmarks/client_cpu.py [--short] [--texts 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

from common import (
    BGE,
    Emulator,
    check_run,
    emulator_process,
    measured_run,
    pipelines_run,
    result,
    run_env,
    text_frame,
    write_job,
)

ACCOUNT = "bench"
BATCH = 100
CONCURRENCY = 16


# -- the baselines: what a user writes without pipelines ------------------------------------


def _read_texts(source: Path) -> tuple[list[int], list[str]]:
    import pyarrow.parquet as pq

    table = pq.read_table(source, columns=["doc_id", "text"])
    return table.column("doc_id").to_pylist(), table.column("text").to_pylist()


def _write_vectors(out: Path, ids: list[int], vectors: list[list[float]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"doc_id": ids, "embedding": pa.array(vectors, type=pa.list_(pa.float32()))})
    pq.write_table(table, out)


async def _litellm_client(source: Path, base_url: str, out: Path) -> None:
    import litellm

    ids, texts = _read_texts(source)
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def embed(batch: list[str]) -> list[list[float]]:
        async with semaphore:
            response = await litellm.aembedding(
                model=f"openai/{BGE}",
                input=batch,
                api_base=f"{base_url}/accounts/{ACCOUNT}/ai/v1",
                api_key=os.environ["CLOUDFLARE_API_KEY"],
            )
            return [item["embedding"] for item in response.data]

    batches = [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]
    answers = await asyncio.gather(*(embed(b) for b in batches))
    _write_vectors(out, ids, [v for answer in answers for v in answer])


async def _httpx_client(source: Path, base_url: str, out: Path) -> None:
    import httpx

    ids, texts = _read_texts(source)
    semaphore = asyncio.Semaphore(CONCURRENCY)
    url = f"{base_url}/accounts/{ACCOUNT}/ai/run/{BGE}"
    headers = {"Authorization": f"Bearer {os.environ['CLOUDFLARE_API_KEY']}"}
    async with httpx.AsyncClient(headers=headers, timeout=60.0) as client:

        async def embed(batch: list[str]) -> list[list[float]]:
            async with semaphore:
                response = await client.post(url, json={"text": batch})
                response.raise_for_status()
                data: list[list[float]] = response.json()["result"]["data"]
                return data

        batches = [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]
        answers = await asyncio.gather(*(embed(b) for b in batches))
    _write_vectors(out, ids, [v for answer in answers for v in answer])


def client_main(kind: str, source: Path, base_url: str, out: Path) -> None:
    """The body of a baseline client process."""
    run = _litellm_client if kind == "litellm" else _httpx_client
    asyncio.run(run(source, base_url, out))


# -- the measurement ------------------------------------------------------------------------


def _client_env(emu: Emulator) -> dict[str, str]:
    env = dict(os.environ)
    env["CLOUDFLARE_API_KEY"] = "bench"  # LiteLLM's name for the token
    env["CLOUDFLARE_ACCOUNT_ID"] = ACCOUNT
    # LiteLLM fetches a model price list from the internet at import unless told not to
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["LITELLM_TELEMETRY"] = "False"
    return env


def _measure(kind: str, emu: Emulator, folder: Path, source: Path, run_no: int) -> float:
    """CPU seconds of one client process embedding ``source``."""
    if kind == "pipelines":
        name = f"cpu{run_no}"
        job = write_job(folder, model=BGE, kind="embed", source=source, rpm=10**6, name=name)
        run = pipelines_run(job, run_env(emu, folder / f"state{run_no}"))
        check_run(run)
        return run.cpu_s
    out = folder / f"{kind}{run_no}.parquet"
    cmd = [
        sys.executable,
        __file__,
        "--client",
        kind,
        "--source",
        str(source),
        "--base-url",
        emu.base_url,
        "--out",
        str(out),
    ]
    run = measured_run(cmd, _client_env(emu))
    check_run(run)
    return run.cpu_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="2,000 and 4,000 texts (CI)")
    parser.add_argument("--texts", type=int, default=None, help="the smaller size")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--client", choices=["litellm", "httpx"], help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args.client, args.source, args.base_url, args.out)
        return

    small = args.texts or (2_000 if args.short else 10_000)
    sizes = [small, small * 2]
    repeat = args.repeat or (1 if args.short else 3)
    has_litellm = importlib.util.find_spec("litellm") is not None
    clients = ["pipelines", "litellm", "httpx"] if has_litellm else ["pipelines", "httpx"]
    baseline = "litellm" if has_litellm else "httpx"
    if not has_litellm:
        print(
            "NOTE: litellm is not installed (pip install -e '.[bench]'); the baseline is a "
            "plain httpx + asyncio.gather + semaphore script, NOT LiteLLM"
        )

    cpu: dict[tuple[str, int], float] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        emulator_process(daily_neurons=10**12, rpm_scale=1000) as emu,
    ):
        folder = Path(tmp)
        run_no = 0
        for n in sizes:
            source = folder / f"texts{n}.parquet"
            text_frame(n, seed=3).write_parquet(source)
            for _ in range(repeat):
                for kind in clients:
                    run_no += 1
                    seconds = _measure(kind, emu, folder, source, run_no)
                    cpu[kind, n] = min(cpu.get((kind, n), float("inf")), seconds)

    lo, hi = sizes
    print(
        f"bge-small embedding, {BATCH} texts per request, {CONCURRENCY} in flight; "
        f"CPU s (user + sys) of the client process, min of {repeat}"
    )
    print(
        f"{'client':10} {f'{lo:,} texts':>12} {f'{hi:,} texts':>12} "
        f"{'s / 1k (whole run)':>19} {'s / 1k (marginal)':>18}"
    )
    per_k: dict[str, tuple[float, float]] = {}
    for kind in clients:
        whole = cpu[kind, hi] / hi * 1000
        marginal = (cpu[kind, hi] - cpu[kind, lo]) / (hi - lo) * 1000
        per_k[kind] = (whole, marginal)
        print(
            f"{kind:10} {cpu[kind, lo]:12.2f} {cpu[kind, hi]:12.2f} {whole:19.3f} {marginal:18.3f}"
        )
    whole_ratio = per_k["pipelines"][0] / per_k[baseline][0]
    marginal_ratio = per_k["pipelines"][1] / per_k[baseline][1]
    label = "LiteLLM" if has_litellm else "httpx baseline (no LiteLLM)"
    print(f"whole run ({hi:,} texts, start-up included): pipelines / {label} = {whole_ratio:.3f}")
    result(
        "P3",
        f"client CPU per 1k texts, pipelines / {label}",
        marginal_ratio,
        "<= 0.5",
        marginal_ratio <= 0.5,
        shown=f"{marginal_ratio:.3f}",
        note=(
            f"marginal {per_k['pipelines'][1]:.3f} vs {per_k[baseline][1]:.3f} CPU s per 1k; "
            f"whole run of {hi:,} texts {whole_ratio:.3f}"
        ),
    )


if __name__ == "__main__":
    main()
