"""Cutting long recordings (PyAV, quiet cut points, WAV size limits) and stitching answers."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipelines.catalog.models import get_model
from pipelines.core.errors import InvalidInput
from pipelines.media.chunking import (
    SAMPLE_RATE,
    Cue,
    Word,
    chunk_seconds,
    cut,
    parse_vtt,
    stitch,
)
from pipelines.tasks.transcribe import MIB, chunk_limits


def bursts(seconds: float, rate: int, *, every: float = 4.0, gap: float = 0.6) -> np.ndarray:
    """Tone with a silent gap every ``every`` seconds (a stand-in for speech and pauses)."""
    t = np.arange(int(seconds * rate)) / rate
    signal = 0.3 * np.sin(2 * np.pi * 220 * t)
    signal[(t % every) > every - gap] = 0.0
    return signal.astype("float32")


def test_chunk_seconds_keeps_wav_chunks_under_the_byte_limit() -> None:
    assert chunk_seconds(1 * MIB, 600) == pytest.approx((MIB - 44) / 32_000)
    assert chunk_seconds(8 * MIB, 120) == 120
    assert chunk_seconds(10, 600) == 1.0  # never absurdly small
    assert chunk_limits(get_model("@cf/openai/whisper-large-v3-turbo"), {}) == (MIB, 600.0)
    assert chunk_limits(get_model("@cf/openai/whisper"), {}) == (8 * MIB, 600.0)
    assert chunk_limits(get_model("@cf/openai/whisper"), {"chunk_max_mb": 0.5}) == (MIB // 2, 600)


def test_cut_decodes_resamples_and_cuts_at_pauses(tmp_path: Path) -> None:
    path = tmp_path / "talk.flac"
    sf.write(path, np.stack([bursts(95.0, 44_100)] * 2, axis=1), 44_100, format="FLAC")
    chunks = cut(path, 30.0)
    assert len(chunks) == 4
    assert sum(c.duration_s for c in chunks) == pytest.approx(95.0, abs=0.01)
    for before, after in itertools.pairwise(chunks):
        assert after.start_s == pytest.approx(before.start_s + before.duration_s)
    for c in chunks[:-1]:
        assert 25.0 <= c.duration_s <= 30.0
        # cut inside a silent gap (every 4 s, the last 0.6 s), not mid-tone
        assert (c.start_s + c.duration_s) % 4.0 > 3.4
    data, rate = sf.read(io.BytesIO(chunks[0].data))
    assert rate == SAMPLE_RATE and data.ndim == 1
    assert len(chunks[0].data) == 44 + 2 * len(data)


def test_cut_raises_on_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"\x00nope" * 500)
    with pytest.raises(Exception):  # noqa: B017  (PyAV's error type; the task names the file)
        cut(bad, 30.0)


def test_stitch_offsets_words_and_cues_and_keeps_them_monotonic() -> None:
    first = {
        "text": " hello there ",
        "word_count": 2,
        "words": [
            {"word": "hello", "start": 0.0, "end": 0.5},
            {"word": "there", "start": 0.6, "end": 10.4},
        ],
        "vtt": "WEBVTT\n\n00:00.000 --> 00:10.400\nhello there\n",
    }
    second = {
        "text": "general kenobi",
        "words": [
            {"word": "general", "start": -0.2, "end": 1.0},
            {"word": "kenobi", "start": 1.1, "end": 2.0},
        ],
    }
    t = stitch([first, second], [(0.0, 10.0), (10.0, 5.0)])
    assert t.text == "hello there general kenobi"
    assert t.word_count == 4
    assert t.words == [
        Word("hello", 0.0, 0.5),
        Word("there", 0.6, 10.0),  # clamped to its chunk
        Word("general", 10.0, 11.0),
        Word("kenobi", 11.1, 12.0),
    ]
    assert t.cues == [Cue(0.0, 10.0, "hello there"), Cue(10.0, 12.0, "general kenobi")]
    assert t.vtt().startswith("WEBVTT\n\n00:00:00.000 --> 00:00:10.000\nhello there\n")
    assert "2\n00:00:10,000 --> 00:00:12,000\ngeneral kenobi" in t.srt()
    assert t.language is None


def test_stitch_reads_turbo_segments_and_language() -> None:
    seg = {
        "start": 0.5,
        "end": 3.0,
        "text": " Bonjour tout le monde.",
        "words": [{"word": "Bonjour", "start": 0.5, "end": 1.0}],
    }
    result = {
        "text": "Bonjour tout le monde.",
        "segments": [seg],
        "transcription_info": {"language": "fr"},
    }
    t = stitch([result, result], [(0.0, 30.0), (30.0, 30.0)])
    assert t.language == "fr"
    assert [c.start for c in t.cues] == [0.5, 30.5]
    assert [w.start for w in t.words] == [0.5, 30.5]
    assert t.word_count == 8  # no word_count given: counted from the text


def test_parse_vtt_accepts_hours_or_not_and_srt_commas() -> None:
    cues = parse_vtt(
        "WEBVTT\n\n1\n00:01.5 --> 00:02.250\nab\ncd\n\n01:00:00,000 --> 01:00:01,000\nx\n"
    )
    assert cues == [Cue(1.5, 2.25, "ab cd"), Cue(3600.0, 3601.0, "x")]


def test_requests_count_chunks_and_media_is_loaded_outside_the_task(tmp_path: Path) -> None:
    from pipelines.job.load import load_job
    from pipelines.sources import open_source
    from pipelines.sources.audio import load_media
    from pipelines.tasks.registry import make_task

    (tmp_path / "audio").mkdir()
    sf.write(tmp_path / "audio/long.wav", bursts(70.0, 16_000), 16_000)
    sf.write(tmp_path / "audio/short.wav", bursts(5.0, 16_000), 16_000)
    (tmp_path / "job.yaml").write_text(
        "name: t\nsource: {kind: audio, path: audio}\n"
        "task: {kind: transcribe, model: '@cf/openai/whisper-large-v3-turbo'}\n"
        "output: {path: out.parquet}\n"
    )
    job = load_job(tmp_path / "job.yaml")
    task = make_task(job, get_model(job.task.model), [])
    batch = next(iter(open_source(job).iter_batches(task.read_columns())))
    calls, failures = task.prepare(batch)
    assert not failures
    assert [task.requests_needed(c) for c in calls] == [3, 1]
    assert [c.usage.audio_seconds for c in calls] == [70.0, 5.0]
    assert task.split(calls[0], 1) is None  # one file: nothing to split
    requests = [task.requests(c, load_media(job, c.media())) for c in calls]
    assert [len(r.bodies) for r in requests] == [3, 1]
    assert sum(length for _, length in requests[0].spans) == pytest.approx(70.0, abs=0.01)
    assert requests[1].spans == ((0.0, 5.0),)
    assert requests[1].bodies[0]["audio"] == (tmp_path / "audio/short.wav").read_bytes()
    (tmp_path / "audio/long.wav").write_bytes(b"gone bad" * 100)  # changed after the probe
    (tmp_path / "audio/short.wav").unlink()
    with pytest.raises(InvalidInput, match=r"long\.wav: cannot decode the audio"):
        load_media(job, calls[0].media())
    with pytest.raises(InvalidInput, match=r"short\.wav: cannot read the file"):
        load_media(job, calls[1].media())
