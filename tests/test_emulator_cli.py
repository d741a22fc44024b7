"""``pipelines emulator`` as a user runs it: a subprocess that announces its address and
serves, and one clear ``error:`` line (exit 2) for anything it cannot do.

How quickly it listens is a benchmark figure (``benchmarks/startup.py``), not a test."""

from __future__ import annotations

import queue
import re
import socket
import subprocess
import sys
import threading

import httpx
import pytest


def _lines(stream: object, out: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        out.put(line)


def emulator_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pipelines", "emulator", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_cli_announces_its_address_and_serves() -> None:
    cmd = [sys.executable, "-m", "pipelines", "emulator", "--port", "0", "--daily-neurons", "123"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    try:
        first = lines.get(timeout=60)  # a deadline for a hung start, not a speed target
        match = re.fullmatch(r"listening on http://127\.0\.0\.1:(\d+)\n", first)
        assert match, first
        port = int(match.group(1))
        assert port > 0
        assert lines.get(timeout=10) == (
            f"  CLOUDFLARE_API_BASE_URL=http://127.0.0.1:{port}/client/v4\n"
        )
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


def assert_one_error_line(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: ")
    for needle in needles:
        assert needle in line, line


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--error-rate", "3"], ["error_rate must be between 0 and 1"]),
        (["--codeless-error-rate", "-1"], ["codeless_error_rate must be between 0 and 1"]),
        (["--json-failure-rate", "1.5"], ["json_failure_rate must be between 0 and 1"]),
        (["--port", "99999"], ["--port must be between 0 and 65535", "99999"]),
        (["--port", "-1"], ["--port must be between 0 and 65535", "-1"]),
        (["--host", "203.0.113.7"], ["cannot listen on 203.0.113.7:0"]),  # not this host's
        (["--host", "no-such-host.invalid"], ["cannot listen on no-such-host.invalid:0"]),
    ],
)
def test_cli_rejects_what_it_cannot_do_in_one_line(args: list[str], needles: list[str]) -> None:
    assert_one_error_line(emulator_cli("--port", "0", *args), *needles)


def test_cli_says_when_the_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = emulator_cli("--port", str(port))
    assert_one_error_line(done, f"cannot listen on 127.0.0.1:{port}", "in use")


def test_cli_flags_reach_the_knobs() -> None:
    cmd = [
        sys.executable,
        "-m",
        "pipelines",
        "emulator",
        "--port",
        "0",
        "--error-result-shape",
        "object",
        "--codeless-error-rate",
        "0.25",
        "--graphql-string-type",
        "String",
        "--plan",
        "paid",
        "--json-failure-rate",
        "0.1",
        "--json-failure-mode",
        "envelope-200",
        "--json-response",
        "string",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        match = re.search(r":(\d+)\n$", proc.stdout.readline())
        assert match
        knobs = httpx.get(f"http://127.0.0.1:{match.group(1)}/__emulator/config").json()
        assert knobs["error_result_shape"] == "object"
        assert knobs["codeless_error_rate"] == 0.25
        assert knobs["graphql_string_type"] == "String"
        assert knobs["plan"] == "paid" and knobs["json_failure_rate"] == 0.1
        assert knobs["json_failure_mode"] == "envelope-200" and knobs["json_response"] == "string"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
