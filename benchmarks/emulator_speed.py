"""How fast the emulator answers: 100-text bge-small embedding requests over loopback.

Starts the emulator in-process (uvicorn in a thread) and sends ``--requests`` sequential
requests of ``--texts`` distinct texts with one keep-alive httpx client, then prints the
median and p95 milliseconds per request (the client's JSON decoding of the ~470 KB answer
included, as for any real caller) and the request rate. A second pass calls the ASGI app
in-process, without sockets or uvicorn, as a near-server-side figure.

    python3 benchmarks/emulator_speed.py [--requests 200] [--texts 100] [--model ...]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx

from pipelines.emulator import EmulatorConfig, build_app, running_emulator

SENTENCE = "the quick brown fox number {i} jumps over the lazy dog near river bank {j}"


def _texts(n: int, salt: int) -> list[str]:
    return [SENTENCE.format(i=i, j=salt) for i in range(n)]


def _over_http(url: str, requests: int, texts: int) -> list[float]:
    timings = []
    with httpx.Client(headers={"Authorization": "Bearer bench"}, timeout=30.0) as client:
        for i in range(10):  # warm caches: validators, tokenizer, rotation matrices
            client.post(url, json={"text": _texts(texts, -i)}).raise_for_status()
        for i in range(requests):
            body = {"text": _texts(texts, i)}
            start = time.perf_counter()
            response = client.post(url, json=body)
            response.raise_for_status()
            response.json()
            timings.append((time.perf_counter() - start) * 1000)
    return timings


async def _in_process(path: str, requests: int, texts: int) -> list[float]:
    app = build_app(EmulatorConfig(daily_neurons=1e12, rpm_scale=1e6))
    transport = httpx.ASGITransport(app=app)
    timings = []
    async with httpx.AsyncClient(
        transport=transport, base_url="http://emulator", headers={"Authorization": "Bearer b"}
    ) as client:
        for i in range(10):
            await client.post(path, json={"text": _texts(texts, -i)})
        for i in range(requests):
            body = {"text": _texts(texts, i)}
            start = time.perf_counter()
            response = await client.post(path, json=body)
            timings.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--texts", type=int, default=100)
    parser.add_argument("--model", default="@cf/baai/bge-small-en-v1.5")
    args = parser.parse_args()
    path = f"/client/v4/accounts/bench/ai/run/{args.model}"

    config = EmulatorConfig(daily_neurons=1e12, rpm_scale=1e6)
    with running_emulator(config) as emu:
        wall = time.perf_counter()
        http = _over_http(f"{emu.url}{path}", args.requests, args.texts)
        wall = time.perf_counter() - wall
    asgi = asyncio.run(_in_process(path, args.requests, args.texts))

    p95 = statistics.quantiles(http, n=20)[-1]
    print(f"model: {args.model}, {args.texts} texts per request, {args.requests} requests")
    print(f"loopback HTTP: median {statistics.median(http):.2f} ms/request, p95 {p95:.2f} ms")
    print(f"loopback HTTP: {args.requests / wall:.0f} requests/s (sequential, one connection)")
    print(f"in-process ASGI (no sockets): median {statistics.median(asgi):.2f} ms/request")


if __name__ == "__main__":
    main()
