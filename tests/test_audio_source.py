"""``source.kind: audio``: listing, header durations, errors as rows, streaming, job checks."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import polars as pl
import pytest
import soundfile as sf

from pipelines.core.errors import JobError, SourceError
from pipelines.job.load import load_job
from pipelines.sources import audio as audio_source
from pipelines.sources import open_source

RATE = 16_000


def tone(seconds: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 330 * t)).astype("float32")


def write_audio(path: Path, seconds: float, rate: int = RATE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = tone(seconds, rate)
    if path.suffix == ".mp3":
        out = io.BytesIO()
        with av.open(out, "w", format="mp3") as container:
            stream = container.add_stream("libmp3lame", rate=rate)
            stream.layout = "mono"
            frame = av.AudioFrame.from_ndarray(data[None, :], format="flt", layout="mono")
            frame.sample_rate = rate
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                container.mux(packet)
        path.write_bytes(out.getvalue())
    else:
        sf.write(path, data, rate, format=path.suffix[1:].upper())
    return path


def write_job(tmp: Path, path: str = "audio", **extra: str) -> Path:
    job = tmp / "job.yaml"
    job.write_text(
        f"""name: audio-test
source:
  kind: audio
  path: {path}
  {extra.get("source", "")}
task:
  kind: transcribe
  model: {extra.get("model", '"@cf/openai/whisper"')}
  params: {extra.get("params", "{}")}
output:
  path: out/t.parquet
  keep: {extra.get("keep", "[]")}
"""
    )
    return job


def rows(job: Path) -> pl.DataFrame:
    source = open_source(load_job(job))
    return pl.concat(list(source.iter_batches(audio_source.COLUMNS)))


TRUTH = {"a.wav": 2.5, "b/c.flac": 3.25, "b/d.ogg": 1.75, "e.mp3": 4.0}


def test_durations_from_headers_within_a_tenth_of_a_second(tmp_path: Path) -> None:
    for rel, seconds in TRUTH.items():
        write_audio(tmp_path / "audio" / rel, seconds, rate=22_050 if "ogg" in rel else RATE)
    frame = rows(write_job(tmp_path))
    assert frame["path"].to_list() == sorted(TRUTH)  # sorted, relative, posix
    assert frame["_key"].to_list() == frame["path"].to_list()
    for row in frame.iter_rows(named=True):
        assert row["error"] is None
        assert abs(row["duration_s"] - TRUTH[row["path"]]) < 0.1, row
        assert row["size_bytes"] == (tmp_path / "audio" / row["path"]).stat().st_size
    assert frame["format"].to_list() == ["wav", "flac", "ogg", "mp3"]


def test_unreadable_and_non_audio_files_are_rows_with_a_reason(tmp_path: Path) -> None:
    folder = tmp_path / "audio"
    write_audio(folder / "ok.wav", 1.0)
    (folder / "broken.mp3").write_bytes(b"\x00garbage" * 300)
    (folder / "notes.wav").write_text("this is text, not audio\n")
    (folder / "empty.flac").write_bytes(b"")
    frame = rows(write_job(tmp_path)).sort("path")
    errors = dict(zip(frame["path"], frame["error"], strict=True))
    assert errors["ok.wav"] is None
    assert errors["broken.mp3"].startswith("not readable as audio (")
    assert errors["notes.wav"].startswith("not readable as audio (")
    assert errors["empty.flac"] == "empty file (0 bytes)"
    bad = frame.filter(pl.col("error").is_not_null())
    assert bad["duration_s"].null_count() == bad.height


def test_extensions_hidden_files_and_globs(tmp_path: Path) -> None:
    folder = tmp_path / "audio"
    for rel in ("x.wav", "deep/er/y.WAV", "z.flac", ".hidden.wav", ".cache/q.wav", "w.aiff"):
        write_audio(folder / rel, 0.5) if not rel.endswith("aiff") else (folder / rel).touch()
    (folder / "readme.txt").write_text("skip me")
    assert rows(write_job(tmp_path))["path"].to_list() == ["deep/er/y.WAV", "x.wav", "z.flac"]
    only_wav = write_job(tmp_path, source="extensions: [wav]")
    assert rows(only_wav)["path"].to_list() == ["deep/er/y.WAV", "x.wav"]
    globbed = write_job(tmp_path, path="'audio/**/*.flac'")
    assert rows(globbed)["path"].to_list() == ["z.flac"]  # relative to the glob's folder
    deep = write_job(tmp_path, path="'audio/deep/**/*'")
    assert rows(deep)["path"].to_list() == ["er/y.WAV"]


def test_no_audio_files_and_missing_folder_fail_up_front(tmp_path: Path) -> None:
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "a.txt").write_text("x")
    with pytest.raises(SourceError, match="has no audio files"):
        open_source(load_job(write_job(tmp_path)))
    with pytest.raises(SourceError, match="no such file or folder"):
        open_source(load_job(write_job(tmp_path, path="nowhere")))
    write_audio(tmp_path / "audio" / "a.wav", 0.5)
    with pytest.raises(SourceError, match="no column 'speaker'"):
        open_source(load_job(write_job(tmp_path, keep="[speaker]")))


def test_probes_one_batch_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clip = write_audio(tmp_path / "clip.wav", 0.2).read_bytes()
    for i in range(300):
        (tmp_path / "audio" / f"{i:04d}.wav").parent.mkdir(exist_ok=True)
        (tmp_path / "audio" / f"{i:04d}.wav").write_bytes(clip)
    probed: list[str] = []
    real = audio_source.probe_row

    def counting(root: Path, rel: str) -> dict[str, object]:
        probed.append(rel)
        return real(root, rel)

    monkeypatch.setattr(audio_source, "probe_row", counting)
    source = open_source(load_job(write_job(tmp_path)))
    assert source.count() == 300 and not probed  # listing does not probe
    batches = source.iter_batches(["path", "duration_s"], batch_rows=20_000)
    first = next(iter(batches))
    assert first.height == audio_source.PROBE_BATCH == len(probed)
    assert first.columns == ["path", "duration_s", "_key"]


def test_job_checks_for_audio_and_transcribe(tmp_path: Path) -> None:
    write_audio(tmp_path / "audio" / "a.wav", 0.5)
    with pytest.raises(JobError, match=r"language: not an option of @cf/openai/whisper"):
        load_job(write_job(tmp_path, params="{language: en}"))
    with pytest.raises(JobError, match="not an option of @cf/openai/whisper-tiny-en"):
        load_job(write_job(tmp_path, model='"@cf/openai/whisper-tiny-en"', params="{task: x}"))
    with pytest.raises(JobError, match="chunk_max_mb: must be a positive number"):
        load_job(write_job(tmp_path, params="{chunk_max_mb: 0}"))
    with pytest.raises(JobError, match="audio rows are keyed by their path"):
        load_job(write_job(tmp_path, source="key: path"))
    turbo = '"@cf/openai/whisper-large-v3-turbo"'
    params = "{language: fr, task: translate, vad_filter: true, chunk_max_seconds: 120}"
    job = load_job(write_job(tmp_path, model=turbo, params=params))
    assert job.task.params["chunk_max_seconds"] == 120
    assert load_job(write_job(tmp_path, params="{chunk_max_mb: 2.5}")).task.params
