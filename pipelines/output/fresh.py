"""What ``--fresh`` removes: exactly the files pipelines made for one output, nothing else.

That is the output and its failures file (once they are known to be pipelines' own), the
work files named in :data:`pipelines.job.paths.WORK_FILE_PATTERNS`, the subtitle files
of the old output's rows and the image files its rows (and unmerged journals) name. A file
or folder someone else put in the work folder, the subtitles folder or the images folder
stays, and so do the manifest (the job's history and spend) and the lock.
The store calls :func:`remove_made_files` only after every check has passed.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.errors import OutputError
from pipelines.job.paths import WORK_FILE_PATTERNS, JobPaths
from pipelines.output.images import remove_images
from pipelines.output.subtitles import SUBTITLE_FORMATS, inside, subtitle_path


def _subtitle_names(output: Path) -> list[str]:
    """The ``path`` of every row of a transcript output (whose subtitles may exist)."""
    try:
        parquet = pq.ParquetFile(output)
        if not {"path", "vtt"} <= set(parquet.schema_arrow.names):
            return []
        names: list[str] = []
        for batch in parquet.iter_batches(columns=["path"]):
            names.extend(str(p) for p in batch.column(0).to_pylist() if p is not None)
        return names
    except (OSError, pa.ArrowException):
        return []


def _remove_subtitles(paths: JobPaths) -> None:
    folder = paths.subtitles
    if not paths.output.is_file() or not folder.is_dir():
        return
    for name in _subtitle_names(paths.output):
        try:
            target = inside(folder, name)
        except OutputError:
            continue  # never written: the writer refuses such names too
        for fmt in SUBTITLE_FORMATS:
            path = subtitle_path(target, fmt)
            if path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
        # the folders the writer made for it, when nothing else is left in them
        for parent in target.parents:
            if parent == folder or folder not in parent.parents:
                break
            with contextlib.suppress(OSError):
                parent.rmdir()


def remove_made_files(paths: JobPaths) -> None:
    """Remove what pipelines made for ``paths.output`` (see the module docstring)."""
    _remove_subtitles(paths)
    journals = sorted(paths.work.glob("results-*.arrow")) if paths.work.is_dir() else []
    outputs = [paths.output] if paths.output.is_file() else []
    remove_images(paths, [*outputs, *journals])
    for path in (paths.output, paths.failures):
        path.unlink(missing_ok=True)
    if not paths.work.is_dir():
        return
    for pattern in WORK_FILE_PATTERNS:
        for path in paths.work.glob(pattern):
            if path.is_file() or path.is_symlink():
                path.unlink(missing_ok=True)
