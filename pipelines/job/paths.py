"""Every path a job writes, derived from ``output.path`` in one place, and the one check of
those paths against the job's inputs (``validate`` and ``run`` both use it, through the
job checks).

A job writes ``<stem>.parquet`` (the output), ``<stem>.failures.parquet``,
``<stem>.manifest.json``, ``.<stem>.parquet.lock``, the work folder
``.<stem>.parquet.pipelines/``, for transcribe jobs ``<stem>.subtitles/`` and for image jobs
the folder ``output.images`` names (its files); atomic writes go through ``.<name>.tmp-*``
files beside their target. The output layer (store, subtitles)
and ops (manifest, lock) take their paths from :func:`job_paths`, so they cannot drift
from what is checked here.

``output.path`` must end in ``.parquet`` and its stem must not end in ``.failures``: then no
two outputs derive the same file (``x.parquet`` and ``x.pq`` would share a failures file and
a manifest, and ``x.failures.parquet`` is ``x.parquet``'s failures file).

The check compares real paths (symbolic links and ``..`` resolved) and, where a file
exists, its device and inode (a hard link, or another spelling of a name on a
case-insensitive file system, is the same file).
"""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pipelines.core.files import tmp_pattern
from pipelines.core.shard import part_of
from pipelines.job.problems import Problems
from pipelines.job.spec import Job

OUTPUT_SUFFIX = ".parquet"
FAILURES_SUFFIX = ".failures" + OUTPUT_SUFFIX

# Every file the tool creates in the work folder: ``--fresh`` removes these and nothing
# else (a file or folder someone else put there stays). A new kind of work file must be
# listed here.
WORK_FILE_PATTERNS = (
    "meta.json",
    "results-*.arrow",
    "failures-*.arrow",
    ".probe-*",
    "meta.json.tmp",  # older versions' temporary names
    ".meta.json.tmp-*",
)

_OUTPUT_ADVICE = "would overwrite or be read back as the input (source.path); write elsewhere"


@dataclass(frozen=True)
class JobPaths:
    """The paths one output derives; see the module docstring."""

    output: Path
    failures: Path
    manifest: Path
    lock: Path
    work: Path
    subtitles: Path
    images: Path | None = None  # an image job's folder of image files (output.images)

    def files(self) -> list[tuple[str, Path]]:
        """The files written (each replaced atomically, the lock excepted), labelled."""
        return [
            ("the output", self.output),
            ("its failures file", self.failures),
            ("its manifest", self.manifest),
            ("its lock file", self.lock),
        ]

    def folders(self) -> list[tuple[str, Path]]:
        """The folders written into (and emptied of the tool's files by ``--fresh``)."""
        folders = [("its work folder", self.work), ("its subtitles folder", self.subtitles)]
        if self.images is not None:
            folders.append(("its images folder", self.images))
        return folders

    def written(self) -> list[Path]:
        """Every path above."""
        return [p for _, p in (*self.files(), *self.folders())]


def output_stem(output: Path) -> str:
    """The name the derived files start with: ``x`` for ``x.parquet`` (the whole name for
    any other name, which the job checks refuse, so that two outputs never share it)."""
    name = output.name
    return name[: -len(OUTPUT_SUFFIX)] if name.endswith(OUTPUT_SUFFIX) else name


def job_paths(output: Path, images: Path | None = None) -> JobPaths:
    """Every path derived from the output file ``output`` (and an image job's folder)."""
    dataset = output.parent
    if part_of(output.name) is not None and dataset.name.endswith(OUTPUT_SUFFIX):
        # a shard: nothing but data files (and hidden work files) inside the dataset folder,
        # so every reader takes the folder as one table; the rest goes beside it
        base = output_stem(dataset)
        part = output_stem(output)
        return JobPaths(
            output=output,
            failures=dataset.with_name(f"{base}.failures") / output.name,
            manifest=dataset.with_name(f"{base}.{part}.manifest.json"),
            lock=output.with_name(f".{output.name}.lock"),
            work=output.with_name(f".{output.name}.pipelines"),
            subtitles=dataset.with_name(f"{base}.subtitles"),
            images=images,
        )
    stem = output_stem(output)
    return JobPaths(
        output=output,
        failures=output.with_name(stem + FAILURES_SUFFIX),
        manifest=output.with_name(f"{stem}.manifest.json"),
        lock=output.with_name(f".{output.name}.lock"),
        work=output.with_name(f".{output.name}.pipelines"),
        subtitles=output.with_name(f"{stem}.subtitles"),
        images=images,
    )


def output_name_problem(output: Path) -> str | None:
    """Why ``output`` cannot be an output file name (see the module docstring), or None."""
    name = output.name
    if not name.endswith(OUTPUT_SUFFIX) or name == OUTPUT_SUFFIX:
        return (
            f"must name a {OUTPUT_SUFFIX} file (e.g. out/result{OUTPUT_SUFFIX}): pipelines "
            "names its failures file, manifest and work files after it"
        )
    if name.endswith(FAILURES_SUFFIX):
        other = name[: -len(FAILURES_SUFFIX)] + OUTPUT_SUFFIX
        return (
            f"must not end in {FAILURES_SUFFIX}: that is the failures file of an output "
            f"named {other}; choose another name ending in {OUTPUT_SUFFIX}"
        )
    return None


# -- the inputs ------------------------------------------------------------------------------


def _safely(test: Callable[[], bool]) -> bool:
    """``path.is_dir`` and the like, False where the path cannot even be asked about (a name
    too long, a NUL: the job checks report those)."""
    try:
        return test()
    except (OSError, ValueError):
        return False


def _real(path: Path | str) -> Path:
    """The real path (links and ``..`` resolved as far as they exist)."""
    try:
        return Path(os.path.realpath(path))
    except (OSError, ValueError):
        return Path(os.path.abspath(path))


class _Stats:
    """``(device, inode)`` of paths, each asked once (inputs share their folders)."""

    def __init__(self) -> None:
        self._seen: dict[Path, tuple[int, int] | None] = {}

    def __call__(self, path: Path) -> tuple[int, int] | None:
        if path not in self._seen:
            try:
                st = os.stat(path)
                self._seen[path] = (st.st_dev, st.st_ino)
            except (OSError, ValueError):
                self._seen[path] = None
        return self._seen[path]

    def within(self, real: Path, folder: Path) -> bool:
        """Whether the real path ``real`` is ``folder`` or inside it, by real path or by
        identity (another spelling of a folder on a case-insensitive file system)."""
        target = self(folder)
        if target is None:
            return False  # nothing is inside a folder that does not exist
        root = _real(folder)
        if real == root or root in real.parents:
            return True
        return any(self(p) == target for p in (real, *real.parents) if p != Path(p.anchor))


@dataclass(frozen=True)
class _Inputs:
    """What ``source.path`` covers: files, folders read whole, and a glob's pattern."""

    files: list[Path]
    folders: list[Path]
    pattern: str | None


def _glob_pattern(job: Job) -> str:
    """The glob with its literal leading folders made real, to compare with real paths."""
    parts = Path(job.source.path).expanduser().parts
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    literal = job.resolve(os.path.join(*parts[:first])) if first else job.base_dir
    return os.path.join(glob.escape(str(_real(literal))), *parts[first:])


def _inputs(job: Job) -> _Inputs:
    spec = job.source.path
    full = job.resolve(spec)
    if glob.has_magic(spec):
        try:
            matches = [Path(p) for p in glob.glob(str(full), recursive=True)]
        except (OSError, ValueError):
            matches = []
        files = [_real(p) for p in matches if _safely(p.is_file)]
        return _Inputs(files=files, folders=[], pattern=_glob_pattern(job))
    if _safely(full.is_dir):
        return _Inputs(files=[], folders=[_real(full)], pattern=None)
    return _Inputs(files=[_real(full)], folders=[], pattern=None)


# -- the check -------------------------------------------------------------------------------


def _file_clash(path: Path, inputs: _Inputs, stats: _Stats) -> bool:
    """Whether writing (or replacing, or deleting) the file ``path`` touches an input file,
    or puts a file where the glob would read it back on the next run."""
    real = _real(path)
    mine = stats(path)
    for file in inputs.files:
        if real == file or (mine is not None and stats(file) == mine):
            return True
    return inputs.pattern is not None and fnmatch.fnmatch(str(real), inputs.pattern)


def _temporary_clash(path: Path, inputs: _Inputs) -> Path | None:
    """An input named like one of ``path``'s temporary files (swept after a crash)."""
    pattern = tmp_pattern(path)
    folder = _real(path.parent)
    for file in inputs.files:
        if file.parent == folder and fnmatch.fnmatchcase(file.name, pattern):
            return file
    return None


def collisions(job: Job) -> Iterator[str]:
    """One message per written path that would touch an input (file, folder or glob)."""
    paths = job_paths(job.output_path, job.images_path)
    inputs = _inputs(job)
    stats = _Stats()
    # every derived file sits beside the output: one message when they all fall inside
    parent = _real(paths.output.parent)
    if any(stats.within(parent, folder) for folder in inputs.folders):
        yield _OUTPUT_ADVICE
    for label, path in paths.files():
        if _file_clash(path, inputs, stats):
            yield _OUTPUT_ADVICE if path == paths.output else f"{label} {path} {_OUTPUT_ADVICE}"
        elif (file := _temporary_clash(path, inputs)) is not None:
            yield (
                f"the input {file} is named like a temporary file of {path}, which pipelines "
                "deletes after a crash; rename the input or write elsewhere"
            )
    for label, folder in paths.folders():
        if any(stats.within(i, folder) for i in (*inputs.files, *inputs.folders)):
            yield (
                f"{label} {folder} holds the input (source.path); pipelines writes and "
                "deletes files there: write elsewhere"
            )


def links(job: Job) -> Iterator[str]:
    """One message per written file that is a symbolic link (replacing a file atomically
    would replace the link and leave its target stale, so links are refused)."""
    paths = job_paths(job.output_path)
    for label, path in paths.files():
        if not _safely(path.is_symlink):
            continue
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        if path == paths.output:
            yield (
                f"{path} is a symbolic link (to {target}); pipelines replaces its files "
                "whole, which would replace the link: point output.path at the real file"
            )
        else:
            yield (
                f"{label} {path} is a symbolic link (to {target}); pipelines replaces it "
                "whole, which would replace the link: remove the link"
            )


# Names an image file can have (the extensions pipelines writes), to test against a glob.
_IMAGE_SAMPLES = ("x.png", "x.jpg", "x.webp")


def images_problems(job: Job) -> Iterator[str]:
    """Why an image job's folder cannot hold its images: it is (or is inside) an input
    folder, a glob would read its files back, or it is one of the job's other paths."""
    folder = job.images_path
    if folder is None:
        return
    if _safely(folder.exists) and not _safely(folder.is_dir):
        yield f"{folder} is a file, not a folder: name a folder for the image files"
        return
    inputs, stats = _inputs(job), _Stats()
    real = _real(folder)
    if any(stats.within(real, f) for f in inputs.folders) or (
        inputs.pattern is not None
        and any(fnmatch.fnmatch(str(real / name), inputs.pattern) for name in _IMAGE_SAMPLES)
    ):
        yield (
            f"{folder} is inside the input (source.path): the image files would be read "
            "back as input; choose a folder elsewhere"
        )
    paths = job_paths(job.output_path)
    for label, path in [*paths.files(), ("its work folder", paths.work)]:
        if real == _real(path) or _real(path) in real.parents:
            yield f"{folder} is {label}, or inside it: choose another folder for the images"


def check_images_folder(job: Job, problems: Problems) -> None:
    """Add every problem with an image job's folder to ``problems`` (at output.images)."""
    for message in dict.fromkeys(images_problems(job)):
        problems.add(("output", "images"), message)


def check_output_paths(job: Job, problems: Problems) -> None:
    """Add every problem with the paths ``job`` writes to ``problems`` (at output.path)."""
    where = ("output", "path")
    clashes = list(dict.fromkeys(collisions(job)))
    for message in clashes:
        problems.add(where, message)
    name = output_name_problem(job.output_path)
    if name is not None and _OUTPUT_ADVICE not in clashes:  # writing elsewhere fixes both
        problems.add(where, name)
    for message in links(job):
        problems.add(where, message)
