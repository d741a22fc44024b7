"""An image job's files: one per row in the folder ``output.images``, named by the row's key.

The runner's writer calls :meth:`ImageWriter.write` with the result rows it is about to
journal: every row's image is written first (a temporary file, fsync'ed, renamed over its
name; the folder fsync'ed once per batch), then the rows, with the ``file`` each one got, go
to the journal. A crash in between leaves a file whose row is not done: the row is sent
again and its file replaced, so an index row never points at a file that was not written.

A row that fails after it had an image (drawn again because its prompt changed) loses its
index row, and :meth:`ImageWriter.forget` removes its out-of-date file, so the folder holds
what the index names.

A file's name is the key when the key is made of lower-case letters, digits, ``.``, ``_``
and ``-`` only (and does not start with ``.`` or ``-``); any other key is made safe (other
characters become ``_``, a leading ``.`` or ``-`` too, at most :data:`MAX_STEM` of it kept)
and gets a short hash of the whole key: a key can never name a path outside the folder,
and two keys never share a file, also on a file system that ignores case. The extension is
the image's real format (``png``, ``jpg``, ``webp``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from pipelines.core.columns import IMAGE_DATA, KEY
from pipelines.core.errors import OutputError
from pipelines.core.files import atomic_write, fsync_dir
from pipelines.job.paths import JobPaths
from pipelines.job.spec import Job
from pipelines.media.images import EXTENSIONS
from pipelines.output.merge import DUPLICATE_KEY, read_chunks
from pipelines.tasks.base import RowFailure

MAX_STEM = 100
HASH_CHARS = 12
_PLAIN = re.compile(r"[a-z0-9_][a-z0-9._-]*")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# Names Windows keeps for devices, whatever the extension.
_DEVICES = {"con", "prn", "aux", "nul", *(f"{p}{i}" for p in ("com", "lpt") for i in range(10))}
# In the folder, naming the index whose images it holds (two outputs never share a folder).
OWNER_FILE = ".pipelines-images.json"
_TEMPORARY = tuple(f".*.{ext}.tmp-*" for ext in sorted(set(EXTENSIONS.values())))


def image_stem(key: str) -> str:
    """The file name (without extension) of the image of the row keyed ``key``."""
    plain = (
        _PLAIN.fullmatch(key) is not None
        and len(key) <= MAX_STEM
        and key.split(".")[0] not in _DEVICES
    )
    if plain:
        return key
    safe = _UNSAFE.sub("_", key)[:MAX_STEM]
    if safe[:1] in (".", "-", ""):
        safe = "_" + safe[1:]
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]
    return f"{safe}-{digest}"


def image_file(folder: Path, key: str, fmt: str) -> Path:
    """Where the ``fmt`` (``png``, ``jpeg``, ``webp``) image of row ``key`` goes."""
    return folder / f"{image_stem(key)}.{EXTENSIONS[fmt]}"


class ImageWriter:
    """Writes the image file of each result row and fills in its ``file`` column."""

    def __init__(self, folder: Path, index: Path) -> None:
        self.folder = folder
        self.index = index
        self.index_folder = index.parent

    @classmethod
    def for_job(cls, job: Job) -> ImageWriter | None:
        """The writer of an image job, or ``None`` for other jobs."""
        if job.task.kind != "image" or job.images_path is None:
            return None
        return cls(job.images_path, job.output_path)

    def _owner(self) -> str:
        """The index, relative to the folder (moving a project folder keeps it)."""
        folder = os.path.realpath(self.folder)
        return Path(os.path.relpath(os.path.realpath(self.index), folder)).as_posix()

    def claim(self) -> None:
        """Refuse a folder another output's images are in: files are named by key, so two
        jobs sharing a folder would overwrite each other's pictures. Only reads."""
        owner = owner_of(self.folder)
        if owner is not None and owner != self._owner():
            raise OutputError(
                f"{self.folder} holds the images of another output ({owner}, relative to the "
                "folder); their files "
                "are named by key and would be overwritten: choose another output.images"
            )

    def open(self) -> None:
        """Make the folder (marked as this output's), and sweep what a crash left in the
        middle of an atomic write."""
        self.claim()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            marker = self.folder / OWNER_FILE
            if not marker.exists():
                atomic_write(marker, json.dumps({"index": self._owner()}) + "\n")
        except OSError as exc:
            raise OutputError(
                f"cannot make the images folder {self.folder} ({exc.strerror or exc}); choose "
                "a writable output.images"
            ) from exc
        sweep_temporary(self.folder)

    def relative(self, path: Path) -> str:
        """``path`` as the index records it: relative to the index's folder, with ``/``."""
        return Path(os.path.relpath(path, self.index_folder)).as_posix()

    def write(self, table: pa.Table) -> pa.Table:
        """Write every row's image; ``table`` with ``file`` filled and the bytes dropped."""
        if IMAGE_DATA not in table.column_names:
            return table
        keys = [str(k) for k in table.column(KEY).to_pylist()]
        formats = table.column("format").to_pylist()
        files: list[str] = []
        for i, (key, fmt) in enumerate(zip(keys, formats, strict=True)):
            path = image_file(self.folder, key, str(fmt))
            data = table.column(IMAGE_DATA)[i].as_py()
            try:
                atomic_write(path, data, sync_dir=False)
            except OSError as exc:
                raise OutputError(
                    f"could not write {path} ({exc.strerror or exc}); free some space or make "
                    "the folder writable and re-run: those rows are sent again"
                ) from exc
            files.append(self.relative(path))
        fsync_dir(self.folder)  # every rename above is durable before any row is journaled
        at = table.column_names.index("file")
        table = table.set_column(at, table.field(at), pa.array(files, pa.string()))
        return table.drop_columns([IMAGE_DATA])

    def forget(self, failures: list[RowFailure]) -> int:
        """Remove the files of rows that now fail: a row drawn again (its prompt or seed
        changed) that fails loses its old row in the index, and so its old, out-of-date
        file; a DuplicateKey record is about the input, not the key's image, and removes
        nothing. Returns how many files went."""
        removed = 0
        for failure in failures:
            if failure.error == DUPLICATE_KEY:
                continue
            for ext in sorted(set(EXTENSIONS.values())):
                path = self.folder / f"{image_stem(failure.key)}.{ext}"
                if path.is_file() and not path.is_symlink():
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed


def owner_of(folder: Path) -> str | None:
    """The index whose images ``folder`` holds (its marker file), or None."""
    try:
        owner = json.loads((folder / OWNER_FILE).read_text(encoding="utf-8")).get("index")
    except (OSError, ValueError, AttributeError):
        return None
    return owner if isinstance(owner, str) else None


def sweep_temporary(folder: Path) -> None:
    """Remove the temporary files of interrupted image writes in ``folder``."""
    for pattern in _TEMPORARY:
        for tmp in folder.glob(pattern):
            with contextlib.suppress(OSError):
                tmp.unlink()


def inside_folder(folder: Path, index_folder: Path, name: object) -> Path | None:
    """The file an index row's ``file`` names, when it is a plain file inside ``folder``
    (a hand-edited index can never lead anywhere else)."""
    if not isinstance(name, str) or not name or "\x00" in name:
        return None
    path = index_folder / name
    try:
        if path.is_symlink() or not path.resolve().is_relative_to(folder.resolve()):
            return None
    except (OSError, ValueError):
        return None
    return path


def image_rows(sources: list[Path], paths: JobPaths) -> Iterator[tuple[list[str], list[bool]]]:
    """For each chunk of result rows in ``sources`` (oldest first), their keys and whether
    each row's file is there as the index says (a file of its ``bytes``, inside the folder)."""
    folder = paths.images
    if folder is None:
        return
    for source in sources:
        for chunk in read_chunks(source, [KEY, "file", "bytes"]):
            if "file" not in chunk.column_names or "bytes" not in chunk.column_names:
                break
            keys = [str(k) for k in chunk.column(KEY).to_pylist()]
            sizes = chunk.column("bytes").to_pylist()
            ok = []
            for name, size in zip(chunk.column("file").to_pylist(), sizes, strict=True):
                path = inside_folder(folder, paths.output.parent, name)
                try:
                    ok.append(path is not None and path.is_file() and path.stat().st_size == size)
                except OSError:
                    ok.append(False)
            yield keys, ok


def remove_images(paths: JobPaths, sources: list[Path]) -> None:
    """Remove the image files the rows of ``sources`` name (``--fresh``), the temporary
    files of interrupted writes, and the folder itself once nothing else is in it."""
    folder = paths.images
    if folder is None or not folder.is_dir():
        return
    for source in sources:
        for chunk in read_chunks(source, ["file"]):
            if "file" not in chunk.column_names:
                break
            for name in chunk.column("file").to_pylist():
                path = inside_folder(folder, paths.output.parent, name)
                if path is not None and path.is_file():
                    path.unlink(missing_ok=True)
    sweep_temporary(folder)
    if [p.name for p in folder.iterdir()] == [OWNER_FILE]:
        (folder / OWNER_FILE).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()  # only when empty: anything someone else put there stays
