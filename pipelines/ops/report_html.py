"""``pipelines report``: one self-contained HTML file people can open, mail and archive.

The charts are plotly figures; plotly.js (about 4.8 MB) is inlined once at the top of the
page, and every style sits in one ``<style>`` block, so the page fetches nothing when it
is viewed: it works offline and as a mail attachment. plotly is the ``report`` extra, so
the import is inside :func:`render_report` and a missing install is one clear error.

Every figure, table cell and title is escaped (tables) or JSON-encoded (figures) and has
already passed through the redaction of :mod:`pipelines.ops.report_data`.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from pipelines.budget import format_neurons
from pipelines.core.errors import JobError, OutputError
from pipelines.core.files import atomic_write
from pipelines.ops.report_data import JobReport, ReportData
from pipelines.output.contact_sheet import SHEET_STYLE

__all__ = ["render_report", "write_report"]

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; vertical-align: top; }
th { background: #f4f4f4; text-align: left; } td.n { text-align: right; }
.muted { color: #777; } .problem { color: #a40000; }
.chart { width: 100%; height: 420px; }
"""

# plotly's default palette, named so that a job keeps its colour from chart to chart
COLOURS = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692"]
CONFIG = {"displaylogo": False, "responsive": True}


def _plotly() -> tuple[Any, Any]:
    try:
        import plotly.graph_objects as go
        import plotly.io as pio
    except ImportError as exc:
        raise JobError(
            "`pipelines report` draws its charts with plotly: pip install 'pipelines[report]'"
        ) from exc
    return go, pio


def _rows_figure(go: Any, data: ReportData) -> Any:
    names = [j.status.job for j in data.jobs]
    fig = go.Figure()
    for label, colour, values in (
        ("done", "#00cc96", [j.status.rows_done for j in data.jobs]),
        ("failed", "#ef553b", [j.status.rows_failed for j in data.jobs]),
        ("pending", "#b0b0b0", [j.status.rows_pending or 0 for j in data.jobs]),
    ):
        fig.add_trace(go.Bar(name=label, y=names, x=values, orientation="h", marker_color=colour))
    fig.update_layout(barmode="stack", title="Rows per job", xaxis_title="rows")
    return fig


def _neurons_figure(go: Any, data: ReportData) -> Any:
    by_day = data.neurons_by_day()
    days = sorted({d["day"] for d in data.days} | {day for day, _, _ in by_day})
    fig = go.Figure()
    series = sorted({(job, model) for _, job, model in by_day})
    for i, (job, model) in enumerate(series):
        values = [by_day.get((day, job, model), 0.0) for day in days]
        fig.add_trace(
            go.Bar(
                name=f"{job} · {model}",
                x=days,
                y=values,
                marker_color=COLOURS[i % len(COLOURS)],
            )
        )
    ledger = {d["day"]: d for d in data.days}
    if any(d["committed"] > 0 for d in data.days):
        fig.add_trace(
            go.Scatter(
                name=f"account {data.account} (ledger)",
                x=days,
                y=[ledger[d]["committed"] if d in ledger else None for d in days],
                mode="markers",
                marker={"symbol": "diamond", "size": 9, "color": "#222"},
            )
        )
    caps = [d["cap"] for d in data.days] or [j.cap for j in data.jobs if j.cap]
    if caps and days:
        fig.add_trace(
            go.Scatter(
                name="daily cap",
                x=days,
                y=[ledger[d]["cap"] if d in ledger else max(caps) for d in days],
                mode="lines",
                line={"color": "#a40000", "dash": "dash"},
            )
        )
    peak = max([sum(v for (d, _, _), v in by_day.items() if d == day) for day in days] or [0])
    title = "Neurons per UTC day against the cap"
    if caps and peak > 0:
        title += f" (busiest day {format_neurons(peak)}, {peak / max(caps):.2%} of the cap)"
    fig.update_layout(barmode="stack", title=title, yaxis_title="neurons")
    if caps and 0 < peak < max(caps) / 100:
        # a day far below the cap would be an invisible sliver on a linear axis
        fig.update_yaxes(type="log")
    return fig


def _runs_figure(go: Any, data: ReportData) -> Any:
    fig = go.Figure()
    for i, job in enumerate(data.jobs):
        runs = [r for r in job.runs if r.get("started_at")]
        fig.add_trace(
            go.Scatter(
                name=job.status.job,
                x=[r["started_at"] for r in runs],
                y=[r.get("rows_done") or 0 for r in runs],
                mode="lines+markers",
                marker_color=COLOURS[i % len(COLOURS)],
                text=[
                    f"{r.get('stop_reason', '?')}, failed {r.get('rows_failed', 0)}, "
                    f"neurons {format_neurons(float(r.get('neurons') or 0))}"
                    for r in runs
                ],
            )
        )
    fig.update_layout(title="Runs over time: rows done per run", yaxis_title="rows done")
    return fig


def _cell(value: Any, *, number: bool = False) -> str:
    text = "?" if value is None else f"{value:,}" if isinstance(value, int) else str(value)
    return f'<td class="n">{html.escape(text)}</td>' if number else f"<td>{html.escape(text)}</td>"


def _sink_text(sink: dict[str, Any] | None) -> str:
    """The last run's Vectorize figures in a few words."""
    if not sink:
        return "-"
    if "error" in sink:
        return str(sink["error"])
    figures = ", ".join(f"{k} {sink.get(k, 0):,}" for k in ("upserted", "deleted", "failed"))
    return f"{sink.get('index', '?')}: {figures}"


def _jobs_table(data: ReportData) -> str:
    head = (
        "job",
        "model",
        "total",
        "done",
        "failed",
        "pending",
        "last run (UTC)",
        "result",
        "output",
        "vectorize",
    )
    rows = []
    for j in data.jobs:
        s = j.status
        result = f"{s.last_run_status} ({s.last_run_exit_code})" if s.last_run_status else "-"
        cells = [_cell(s.job), _cell(s.model)]
        cells += [_cell(v, number=True) for v in (s.rows_total, s.rows_done, s.rows_failed)]
        cells += [_cell(s.rows_pending, number=True), _cell(s.last_run_ended or "-")]
        cells += [_cell(result), _cell(j.output), _cell(_sink_text(j.vectorize))]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    header = "".join(f"<th>{h}</th>" for h in head)
    return f"<table><tr>{header}</tr>{''.join(rows)}</table>"


def _failures_section(job: JobReport) -> str:
    title = f"<h3>{html.escape(job.status.job)}</h3>"
    if not job.failures:
        return title + '<p class="muted">no failed rows</p>'
    rows = []
    for f in job.failures:
        examples = "<br>".join(html.escape(e) for e in f.examples)
        code = _cell(f.code if f.code is not None else "-")
        rows.append(
            f"<tr>{_cell(f.error)}{code}{_cell(f.count, number=True)}<td>{examples}</td></tr>"
        )
    header = "<tr><th>error</th><th>code</th><th>rows</th><th>example messages</th></tr>"
    return f"{title}<table>{header}{''.join(rows)}</table>"


def render_report(data: ReportData) -> str:
    """The whole page, plotly.js inlined once."""
    go, pio = _plotly()
    from plotly.offline import get_plotlyjs

    figures = [
        ("rows", _rows_figure(go, data)),
        ("neurons", _neurons_figure(go, data)),
        ("runs", _runs_figure(go, data)),
    ]
    charts = "".join(
        pio.to_html(
            fig.update_layout(template="plotly_white", height=420),
            full_html=False,
            include_plotlyjs=False,
            div_id=f"chart-{name}",
            config=CONFIG,
        )
        for name, fig in figures
    )
    problems = [*data.problems, *(p for j in data.jobs for p in j.status.problems)]
    notes = "".join(f'<p class="problem">{html.escape(p)}</p>' for p in problems)
    failures = "".join(_failures_section(j) for j in data.jobs)
    sheets = "".join(f"<h3>{html.escape(j.status.job)}</h3>{j.sheet}" for j in data.jobs if j.sheet)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>pipelines report</title>"
        f"<style>{STYLE}{SHEET_STYLE}</style><script>{get_plotlyjs()}</script></head><body>"
        "<h1>pipelines report</h1>"
        f'<p class="muted">generated {html.escape(data.generated_at)} (UTC), '
        f"ledger account {html.escape(data.account)}</p>{notes}"
        f"<h2>Jobs</h2>{_jobs_table(data)}"
        f"<h2>Charts</h2>{charts}"
        f"<h2>Failures</h2>{failures}"
        + (f"<h2>Images</h2>{sheets}" if sheets else "")
        + "</body></html>\n"
    )


def write_report(data: ReportData, path: Path) -> Path:
    """Render and write atomically: a mail client or a browser never sees half a page."""
    text = render_report(data)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text)
    except OSError as exc:
        raise OutputError(f"cannot write {path} ({exc.strerror or exc})") from exc
    return path
