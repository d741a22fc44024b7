"""Durable atomic writes (pipelines.core.files) and the writers that use them."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core import files
from pipelines.core.files import atomic_path, atomic_write, fsync_dir, tmp_pattern


class SyncLog:
    """Records what was fsync'ed, as (kind, path) in order, and each rename."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, str]] = []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd: int) -> None:
            target = os.readlink(f"/proc/self/fd/{fd}")
            kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
            self.events.append((kind, target))
            real_fsync(fd)

        def replace(src: Any, dst: Any) -> None:
            self.events.append(("rename", str(dst)))
            real_replace(src, dst)

        monkeypatch.setattr(files.os, "fsync", fsync)
        monkeypatch.setattr(files.os, "replace", replace)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name fds")
def test_atomic_write_fsyncs_the_file_then_renames_then_fsyncs_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = SyncLog(monkeypatch)
    target = tmp_path / "meta.json"
    atomic_write(target, '{"a": 1}')
    assert target.read_text() == '{"a": 1}'
    kinds = [kind for kind, _ in log.events]
    assert kinds == ["file", "rename", "dir"]
    assert log.events[0][1].startswith(str(tmp_path / ".meta.json.tmp-"))  # same folder
    assert log.events[2][1] == str(tmp_path)
    assert leftovers(tmp_path) == []


def test_atomic_write_takes_bytes_and_text_and_replaces_what_was_there(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    atomic_write(target, b"\x00\xffold")
    assert target.read_bytes() == b"\x00\xffold"
    atomic_write(target, "néw")
    assert target.read_bytes() == "néw".encode()


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.parquet"
    target.write_bytes(b"previous")

    def broken(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", broken)
    with pytest.raises(OSError, match="No space"):
        atomic_write(target, b"new content")
    assert target.read_bytes() == b"previous"
    assert leftovers(tmp_path) == []


def test_a_failed_rename_removes_the_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()  # a folder cannot be replaced by a file
    (target / "keep").write_text("x")
    with pytest.raises(OSError):
        atomic_write(target, "text")
    assert (target / "keep").read_text() == "x"
    assert leftovers(tmp_path) == []


def test_a_streaming_writer_that_raises_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "result.parquet"
    schema = pa.schema([pa.field("x", pa.int64())])
    with pytest.raises(ValueError, match="schema"), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".result.parquet.tmp-")
        with pq.ParquetWriter(tmp, schema) as writer:
            writer.write_table(pa.table({"x": [1]}))
            writer.write_table(pa.table({"x": ["not a number"]}))
    assert not target.exists()
    assert leftovers(tmp_path) == []


def test_a_streaming_writer_that_finishes_replaces_the_target(tmp_path: Path) -> None:
    target = tmp_path / "result.parquet"
    with atomic_path(target) as tmp:
        pq.write_table(pa.table({"x": [1, 2, 3]}), tmp)
    assert pq.read_table(target).column("x").to_pylist() == [1, 2, 3]
    assert leftovers(tmp_path) == []


def test_an_interrupt_while_streaming_also_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "result.parquet"
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert not target.exists() and leftovers(tmp_path) == []


def test_temporary_names_are_unique_and_swept_by_the_pattern(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second
        assert sorted(tmp_path.glob(tmp_pattern(target))) == sorted([first, second])
        first.write_text("1")
        second.write_text("2")
    assert json.loads(target.read_text()) == 1  # the last to finish (the outer) wins, whole


def test_fsync_dir_tolerates_a_missing_folder(tmp_path: Path) -> None:
    fsync_dir(tmp_path / "gone")  # best effort: no exception


def test_no_module_renames_files_by_hand() -> None:
    """Every durable replace goes through core.files (the class of bug: a writer that
    forgets the fsync, or leaves its temporary file behind)."""
    root = Path(files.__file__).resolve().parents[1]
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "files.py" and path.parent.name == "core":
            continue
        text = path.read_text(encoding="utf-8")
        if any(call in text for call in ("os.replace(", "os.rename(", "shutil.move(")):
            offenders.append(str(path.relative_to(root)))
    assert offenders == []
