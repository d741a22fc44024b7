"""Subtitle files next to a transcribe job's output: ``<output stem>.subtitles/<path>.vtt|.srt``.

The runner's writer calls :meth:`SubtitleWriter.write` with the result rows it is about to
make durable, before it journals them: a crash in between leaves a subtitle file for a row
that is sent again (and the file rewritten), never a done row without its file. Each file is
written whole to a temporary name and renamed, so a reader never sees half a file. The WebVTT
and SRT formats live in :mod:`pipelines.media.subtitles`; SRT is made from the row's ``vtt``.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pyarrow as pa

from pipelines.core.errors import OutputError
from pipelines.core.files import atomic_write
from pipelines.job.paths import job_paths
from pipelines.job.spec import Job
from pipelines.media.subtitles import parse_vtt, srt


def subtitles_dir(output: Path) -> Path:
    """``<output stem>.subtitles`` next to the output file."""
    return job_paths(output).subtitles


SUBTITLE_FORMATS = ("vtt", "srt")


def subtitle_path(target: Path, fmt: str) -> Path:
    """The ``fmt`` (``vtt`` or ``srt``) file of the row whose path gives ``target``."""
    return target.with_name(f"{target.name}.{fmt}")


def inside(folder: Path, name: str) -> Path:
    """``folder / name``, refusing any name that would land outside ``folder``."""
    rel = PurePosixPath(name.replace("\\", "/"))
    if (
        not name
        or "\x00" in name
        or rel.is_absolute()
        or any(part in ("", ".", "..") for part in name.replace("\\", "/").split("/"))
    ):
        raise OutputError(f"refusing to write subtitles for {name!r}: not a plain relative path")
    target = folder.joinpath(*rel.parts)
    root = folder.resolve()
    if not target.resolve().is_relative_to(root):  # a symbolic link inside the folder
        raise OutputError(f"refusing to write subtitles for {name!r}: it leads outside {folder}")
    return target


class SubtitleWriter:
    """Writes the ``.vtt`` and/or ``.srt`` file of each transcript row."""

    def __init__(self, folder: Path, *, vtt: bool, srt: bool) -> None:
        self.folder = folder
        self.vtt = vtt
        self.srt = srt

    @classmethod
    def for_job(cls, job: Job) -> SubtitleWriter | None:
        """The writer ``job`` asks for (``output.vtt`` / ``output.srt``), or ``None``."""
        if job.task.kind != "transcribe" or not (job.output.vtt or job.output.srt):
            return None
        return cls(subtitles_dir(job.output_path), vtt=job.output.vtt, srt=job.output.srt)

    def write(self, table: pa.Table) -> int:
        """The files of every row of ``table`` (columns ``path`` and ``vtt``); returns how many."""
        if table.num_rows == 0:
            return 0
        paths = table.column("path").to_pylist()
        documents = table.column("vtt").to_pylist()
        written = 0
        for name, vtt in zip(paths, documents, strict=True):
            if name is None or vtt is None:
                continue
            target = inside(self.folder, str(name))
            files = []
            if self.vtt:
                files.append((subtitle_path(target, "vtt"), vtt))
            if self.srt:
                files.append((subtitle_path(target, "srt"), srt(parse_vtt(vtt))))
            for path, text in files:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write(path, text)
                except OSError as exc:
                    raise OutputError(
                        f"could not write {path} ({exc.strerror or exc}); free some space or "
                        "make the folder writable and re-run: those rows are sent again"
                    ) from exc
                written += 1
        return written
