"""``pipelines emulator`` as a user runs it: a subprocess that announces its address quickly."""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
import time

import httpx


def _lines(stream: object, out: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        out.put(line)


def test_cli_listens_within_three_seconds_and_serves() -> None:
    cmd = [sys.executable, "-m", "pipelines", "emulator", "--port", "0", "--daily-neurons", "123"]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    try:
        first = lines.get(timeout=3.0)
        elapsed = time.monotonic() - start
        match = re.fullmatch(r"listening on http://127\.0\.0\.1:(\d+)\n", first)
        assert match, first
        assert elapsed < 3.0
        port = int(match.group(1))
        assert port > 0
        stats = httpx.get(f"http://127.0.0.1:{port}/__emulator/stats").json()
        assert stats["daily_neurons"] == 123 and stats["requests_total"] == 0
        url = f"http://127.0.0.1:{port}/client/v4/accounts/a/ai/run/@cf/baai/bge-small-en-v1.5"
        response = httpx.post(url, json={"text": "hi"}, headers={"Authorization": "Bearer t"})
        assert response.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()
        assert proc.stdout is not None
        proc.stdout.close()


def test_cli_rejects_bad_knobs() -> None:
    cmd = [sys.executable, "-m", "pipelines", "emulator", "--port", "0", "--error-rate", "3"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "error_rate must be between 0 and 1" in done.stderr
