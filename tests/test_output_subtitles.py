"""The subtitle writer of the output side: files next to the output, whole or not at all, and
never outside ``<output stem>.subtitles``."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.core.errors import OutputError
from pipelines.media.subtitles import Cue, parse_vtt, webvtt
from pipelines.output.subtitles import SubtitleWriter, inside, subtitles_dir

VTT = webvtt([Cue(0.0, 1.25, "hello there"), Cue(1.5, 3.0, "general kenobi")])


def rows(*paths: str) -> pa.Table:
    return pa.table({"path": list(paths), "vtt": [VTT] * len(paths)})


def test_writes_vtt_and_srt_under_the_relative_path(tmp_path: Path) -> None:
    folder = subtitles_dir(tmp_path / "out" / "transcripts.parquet")
    assert folder == tmp_path / "out" / "transcripts.subtitles"
    writer = SubtitleWriter(folder, vtt=True, srt=True)
    assert writer.write(rows("a.wav", "talks/b.flac")) == 4
    assert (folder / "a.wav.vtt").read_text() == VTT
    srt = (folder / "talks/b.flac.srt").read_text()
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,250\nhello there\n")
    assert parse_vtt(srt) == parse_vtt(VTT)
    assert sorted(p.name for p in folder.rglob("*")) == [
        "a.wav.srt",
        "a.wav.vtt",
        "b.flac.srt",
        "b.flac.vtt",
        "talks",
    ]  # no temporary file left behind


def test_only_the_formats_asked_for(tmp_path: Path) -> None:
    SubtitleWriter(tmp_path, vtt=False, srt=True).write(rows("a.wav"))
    assert [p.name for p in tmp_path.iterdir()] == ["a.wav.srt"]


@pytest.mark.parametrize(
    "name", ["../escape.wav", "a/../../escape.wav", "/etc/passwd", "a//b.wav", "./a.wav", ""]
)
def test_a_path_that_could_leave_the_folder_is_refused(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "subs"
    with pytest.raises(OutputError, match="refusing to write subtitles"):
        SubtitleWriter(folder, vtt=True, srt=True).write(rows(name))
    assert not list(tmp_path.rglob("*.vtt")) and not list(tmp_path.rglob("*.srt"))


def test_a_symbolic_link_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "subs"
    folder.mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", folder / "talks")
    with pytest.raises(OutputError, match="leads outside"):
        inside(folder, "talks/b.flac")
    assert inside(folder, "other/b.flac") == folder / "other" / "b.flac"


def test_a_write_that_fails_is_an_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "subs"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(OutputError, match="could not write"):
        SubtitleWriter(blocker, vtt=True, srt=False).write(rows("a.wav"))
