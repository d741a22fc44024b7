"""The contact sheet of an image job: one self-contained HTML page of its index's thumbnails.

Each thumbnail is a small JPEG made with Pillow and embedded as a ``data:`` URI; the page has
its style inline and a Content-Security-Policy that allows nothing else, so viewing it
fetches nothing, and it can be mailed or archived as one file. Above the grid: the job, its
model, how many images the index holds, how many are shown, how many files are missing or
no longer what was made (their sha256 differs), the failed rows and the bytes on disk.
Every text from the data (keys, prompts) is escaped.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.columns import KEY
from pipelines.core.errors import JobError, OutputError
from pipelines.job.paths import job_paths
from pipelines.job.spec import Job
from pipelines.media.images import NotAnImage, thumbnail
from pipelines.output.images import inside_folder

COLUMNS = [KEY, "file", "sha256", "bytes", "width", "height", "format", "seed", "prompt"]
_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_PAGE_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px}
"""
# the grid's own rules: also carried by the HTML report, which shows image jobs' sheets
SHEET_STYLE = """
.counts{color:#555;margin:0 0 16px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(var(--s),1fr));gap:12px}
figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px}
figure img{width:100%;height:auto;display:block;border-radius:3px}
figcaption{font-size:12px;color:#444;margin-top:4px;word-break:break-all}
.gone{display:flex;align-items:center;justify-content:center;height:var(--s);
background:#f3e5e5;color:#933;border-radius:3px}
"""


@dataclass
class SheetCounts:
    """What the sheet says about the index."""

    rows: int = 0  # rows of the index
    shown: int = 0  # thumbnails on the page
    missing: int = 0  # shown rows whose file is gone
    changed: int = 0  # shown rows whose file is not the image made (sha256 differs)
    failed: int = 0  # rows of the failures file
    bytes: int = 0  # of the files shown
    formats: Counter[str] = field(default_factory=Counter)


def _tile(row: dict[str, object], folder: Path, base: Path, size: int, counts: SheetCounts) -> str:
    """One ``<figure>``: the thumbnail, or a placeholder saying why there is none."""
    path = inside_folder(folder, base, row.get("file"))
    caption = f"{row[KEY]} · seed {row.get('seed')} · {row.get('width')}x{row.get('height')}"
    prompt = html.escape(str(row.get("prompt") or ""), quote=True)
    body = '<div class="gone">file missing</div>'
    try:
        data = path.read_bytes() if path is not None else None
    except OSError:
        data = None
    if data is None:
        counts.missing += 1
    else:
        counts.bytes += len(data)
        counts.formats[str(row.get("format"))] += 1
        if hashlib.sha256(data).hexdigest() != row.get("sha256"):
            counts.changed += 1
            caption += " · changed since made"
        try:
            small = base64.b64encode(thumbnail(data, size)).decode("ascii")
            body = f'<img src="data:image/jpeg;base64,{small}" alt="{prompt}" title="{prompt}">'
        except NotAnImage:
            body = '<div class="gone">not an image any more</div>'
    return f"<figure>{body}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _rows(index: Path, limit: int) -> tuple[list[dict[str, object]], int]:
    try:
        parquet = pq.ParquetFile(index)
        names = [c for c in COLUMNS if c in parquet.schema_arrow.names]
        if "file" not in names:
            raise OutputError(f"{index} is not the index of an image job (it has no file column)")
        rows: list[dict[str, object]] = []
        for batch in parquet.iter_batches(columns=names):
            rows.extend(batch.to_pylist()[: max(0, limit - len(rows))])
        return rows, parquet.metadata.num_rows
    except (OSError, pa.ArrowException) as exc:
        raise OutputError(f"cannot read {index} ({exc})") from exc


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def sheet_section(job: Job, *, limit: int = 500, size: int = 192) -> tuple[str, SheetCounts]:
    """``job``'s images as an HTML fragment (counts, then a grid of the first ``limit`` rows
    of its index), for a page that carries :data:`SHEET_STYLE`."""
    if job.task.kind != "image" or job.images_path is None:
        raise JobError(f"job {job.name} is a {job.task.kind} job: only image jobs have images")
    paths = job_paths(job.output_path, job.images_path)
    if not paths.output.is_file():
        raise JobError(f"{paths.output} does not exist yet: run the job first")
    rows, total = _rows(paths.output, limit)
    counts = SheetCounts(rows=total, shown=len(rows))
    if paths.failures.is_file():
        counts.failed = pq.ParquetFile(paths.failures).metadata.num_rows
    base = paths.output.parent
    tiles = [_tile(row, job.images_path, base, size, counts) for row in rows]
    formats = ", ".join(f"{n:,} {fmt}" for fmt, n in sorted(counts.formats.items())) or "none"
    summary = (
        f"{_n(counts.rows, 'image')} in the index, {counts.shown:,} shown; "
        f"{_n(counts.missing, 'file')} missing, {counts.changed:,} changed since made; "
        f"{_n(counts.failed, 'failed row')}; {counts.bytes / 1e6:,.1f} MB shown ({formats})"
    )
    fragment = (
        f'<div class="sheet" style="--s:{size}px"><p class="counts">{html.escape(summary)}</p>\n'
        '<div class="grid">\n' + "\n".join(tiles) + "\n</div></div>"
    )
    return fragment, counts


def contact_sheet(job: Job, *, limit: int = 500, size: int = 192) -> tuple[str, SheetCounts]:
    """The HTML page of ``job``'s images (the first ``limit`` rows of its index)."""
    fragment, counts = sheet_section(job, limit=limit, size=size)
    title = html.escape(f"{job.name}: {job.task.model}")
    page = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">'
        f"<title>{title}</title><style>{_PAGE_STYLE}{SHEET_STYLE}</style></head>\n"
        f"<body><h1>{title}</h1>{fragment}</body></html>\n"
    )
    return page, counts
