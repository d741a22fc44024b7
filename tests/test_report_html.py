"""``pipelines report`` and ``run --report``: one self-contained HTML page, built from real
runs against the emulator, that renders in headless Chromium without a console error and
never holds the API token."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.emulator.server import RunningEmulator
from pipelines.job.load import load_job
from pipelines.ops.manifest import write_manifest
from pipelines.ops.report_data import collect_report
from pipelines.ops.report_html import render_report
from pipelines.output.store import FAILURE_SCHEMA, failures_path_for
from pipelines.run.report import RunReport, StopReason

pytest.importorskip("plotly", reason="the report extra (plotly) is not installed")

TOKEN = "report-token-0123456789abcdef"
LONG = " ".join(["tokens"] * 900)  # over bge-small's 512 tokens: fails before sending


def cli(emu: RunningEmulator, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CLOUDFLARE_ACCOUNT_ID": "report-proof",
        "CLOUDFLARE_API_TOKEN": TOKEN,
        "CLOUDFLARE_API_BASE_URL": emu.base_url,
        "PIPELINES_STATE_DIR": str(tmp / "state"),
    }
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def make_jobs(tmp: Path) -> Path:
    """Two embed jobs in one folder; the second has two texts too long to embed."""
    folder = tmp / "jobs"
    folder.mkdir()
    for name, bad in (("rep-small", 0), ("rep-fails", 2)):
        rows = [f"{i},short text number {i}" for i in range(20)]
        rows += [f"long-{i},{LONG}" for i in range(bad)]
        (folder / f"{name}.csv").write_text("doc_id,text\n" + "\n".join(rows) + "\n")
        (folder / f"{name}.yaml").write_text(
            f"name: {name}\nprovider: cloudflare\n"
            f"source: {{kind: csv, path: {name}.csv, key: doc_id}}\n"
            'task: {kind: embed, model: "@cf/baai/bge-small-en-v1.5", input: text}\n'
            f"output: {{path: ../out/{name}.parquet}}\n"
            "budget: {daily_neurons: 10000, reserve: 0}\n"
        )
    return folder


def assert_self_contained(page: str) -> None:
    assert not re.search(r"<(script|link|img|iframe)[^>]*\b(src|href)\s*=", page, re.I)
    assert "@import" not in page


@pytest.mark.emulator(rpm_scale=100)
def test_run_report_then_report_command(tmp_path: Path, emu: RunningEmulator) -> None:
    jobs = make_jobs(tmp_path)
    page_path = tmp_path / "nightly" / "report.html"
    ran = cli(emu, tmp_path, "run", "--no-progress", str(jobs), "--report", str(page_path))
    assert ran.returncode == 1, ran.stderr  # rows failed in rep-fails: exit 1, report written
    assert f"report: wrote {page_path}" in ran.stdout
    page = page_path.read_text(encoding="utf-8")
    assert_self_contained(page)
    assert TOKEN not in page
    for needle in ("rep-small", "rep-fails", "chart-rows", "chart-neurons", "chart-runs"):
        assert needle in page
    assert "Plotly.newPlot" in page and page.count("plotly.js v") >= 1  # runtime inlined once
    failures = page.split("<h2>Failures</h2>", 1)[1]
    assert "no failed rows" in failures  # rep-small
    fails_part = failures.split("rep-fails", 1)[1]
    assert re.search(r'<td class="n">2</td>', fails_part)  # two rows of one failure kind

    again = cli(
        emu, tmp_path, "report", str(jobs), "--out", str(tmp_path / "r2.html"), "--days", "7"
    )
    assert again.returncode == 0, again.stderr
    assert TOKEN not in (tmp_path / "r2.html").read_text(encoding="utf-8")


def test_report_of_no_jobs_is_one_error_line(tmp_path: Path) -> None:
    env = {**os.environ, "PIPELINES_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run(
        [sys.executable, "-m", "pipelines", "report", str(tmp_path / "nope.yaml")],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error:") and "Traceback" not in done.stderr


def test_the_token_never_reaches_the_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even when a server echoed it into a failure message and a run's message."""
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", TOKEN)
    folder = make_jobs(tmp_path)
    job = load_job(folder / "rep-fails.yaml")
    out = job.output_path
    out.parent.mkdir(parents=True, exist_ok=True)
    when = datetime(2026, 11, 28, 1, 0, tzinfo=UTC)
    row = {
        "_key": "x",
        "_hash": "h",
        "error": "InvalidInput",
        "code": 5006,
        "status": 400,
        "message": f"bad header Authorization: Bearer {TOKEN}",
        "attempts": 1,
        "retryable": False,
        "run_id": "r1",
        "failed_at": when,
    }
    pq.write_table(pa.Table.from_pylist([row], schema=FAILURE_SCHEMA), failures_path_for(out))
    report = RunReport(
        job=job.name,
        run_id="r1",
        stop_reason=StopReason.ROWS_FAILED,
        rows_done=0,
        rows_failed=1,
        neurons=3.5,
        message=f"echoed {TOKEN}",
    )
    write_manifest(job, report, started_at=when, ended_at=when, job_hash="h")
    data = collect_report([job], generated_at="2026-11-28T02:00:00Z")
    assert data.neurons_by_day() == {("2026-11-28", "rep-fails", job.task.model): 3.5}
    [code] = data.jobs[0].failures
    assert (code.error, code.code, code.count) == ("InvalidInput", 5006, 1)
    page = render_report(data)
    assert TOKEN not in page and "Bearer ***" in page


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


# Installed ahead of the page's own scripts: records every uncaught error, rejected promise
# and console.error, so the test sees them in the DOM that --dump-dom prints.
HOOK = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push('error: ' + e.message));
window.addEventListener('unhandledrejection', e => window.__errors.push('rejection: ' + e.reason));
const __ce = console.error;
console.error = (...a) => { window.__errors.push('console: ' + a.join(' ')); __ce(...a); };
window.addEventListener('load', () => setTimeout(() => {
  const charts = [...document.querySelectorAll('.plotly-graph-div')];
  const drawn = charts.filter(
    c => c.querySelector('svg.main-svg') && c.querySelector('g.trace path'));
  document.body.setAttribute('data-charts', String(charts.length));
  document.body.setAttribute('data-drawn', String(drawn.length));
  document.body.setAttribute('data-errors', JSON.stringify(window.__errors));
}, 500));
</script>"""

# Nothing leaves the machine: every host name resolves to nothing, so a fetch the page
# tried would fail and show up as an error.
OFFLINE = ["--host-resolver-rules=MAP * ~NOTFOUND", "--no-proxy-server"]


def _browser(chromium: str, *args: str) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    return subprocess.run(
        [chromium, *flags, *OFFLINE, "--enable-logging=stderr", "--v=0", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.emulator(rpm_scale=100)
def test_the_page_renders_in_headless_chromium(tmp_path: Path, emu: RunningEmulator) -> None:
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (`make deps` installs it: .ci/system-packages)")
    jobs = make_jobs(tmp_path)
    page_path = tmp_path / "report.html"
    ran = cli(emu, tmp_path, "run", "--no-progress", str(jobs), "--report", str(page_path))
    assert page_path.exists(), ran.stderr
    harness = tmp_path / "harness.html"
    harness.write_text(
        page_path.read_text(encoding="utf-8").replace("<head>", "<head>" + HOOK, 1),
        encoding="utf-8",
    )
    dom = _browser(chromium, "--virtual-time-budget=10000", "--dump-dom", harness.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body is not None, dom.stdout[:2000]
    attrs = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(1)))
    assert attrs.get("charts") == "3" and attrs.get("drawn") == "3", attrs
    assert attrs.get("errors") == "[]", attrs
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if re.search(r"error|uncaught", line, re.I)], console
    shot = tmp_path / "report.png"
    taken = _browser(
        chromium,
        "--window-size=1200,2400",
        "--virtual-time-budget=10000",
        f"--screenshot={shot}",
        page_path.as_uri(),
    )
    assert taken.returncode == 0 and shot.stat().st_size > 10_000, taken.stderr[-2000:]
    print(f"report screenshot: {shot}")


def test_the_page_shows_where_results_went(tmp_path: Path) -> None:
    """The output as the job file writes it, and the last run's Vectorize figures."""
    folder = make_jobs(tmp_path)
    job = load_job(folder / "rep-small.yaml")
    when = datetime(2026, 11, 28, 1, 0, tzinfo=UTC)
    report = RunReport(job=job.name, run_id="r1", stop_reason=StopReason.DONE, rows_done=20)
    sink = {"index": "docs-idx", "upserted": 18, "deleted": 2, "failed": 0, "requests": 1}
    write_manifest(
        job, report, started_at=when, ended_at=when, job_hash="h", extra={"vectorize": sink}
    )
    page = render_report(collect_report([job], generated_at="2026-11-28T02:00:00Z"))
    assert "docs-idx: upserted 18, deleted 2, failed 0" in page
    assert "../out/rep-small.parquet" in page
