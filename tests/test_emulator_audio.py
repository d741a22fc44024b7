"""``pipelines.media.audio``: durations and formats from headers, clear errors for bad data."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from pipelines.core.errors import SourceError
from pipelines.media.audio import AudioInfo, probe_bytes, probe_duration, probe_file


def _tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype("float32")


def _sndfile(seconds: float, rate: int, fmt: str, channels: int = 1) -> bytes:
    data = _tone(seconds, rate)
    if channels == 2:
        data = np.stack([data, data], axis=1)
    buf = io.BytesIO()
    sf.write(buf, data, rate, format=fmt)
    return buf.getvalue()


def _mp3(seconds: float, rate: int = 16_000) -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=rate)
        frame = av.AudioFrame.from_ndarray(
            _tone(seconds, rate)[None, :], format="flt", layout="mono"
        )
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


@pytest.mark.parametrize(
    ("fmt", "seconds", "rate", "channels"),
    [("WAV", 2.5, 16_000, 1), ("FLAC", 1.25, 44_100, 2), ("OGG", 3.0, 22_050, 1)],
)
def test_sndfile_formats(
    fmt: str, seconds: float, rate: int, channels: int, tmp_path: Path
) -> None:
    data = _sndfile(seconds, rate, fmt, channels)
    info = probe_bytes(data)
    assert info == AudioInfo(pytest.approx(seconds, abs=1e-3), fmt.lower(), rate, channels)
    path = tmp_path / f"clip.{fmt.lower()}"
    path.write_bytes(data)
    assert probe_file(path) == info
    assert probe_duration(data) == info.duration_s


def test_mp3_goes_through_ffmpeg(tmp_path: Path) -> None:
    data = _mp3(2.0)
    info = probe_bytes(data)
    assert info.format == "mp3" and info.sample_rate == 16_000
    assert info.duration_s == pytest.approx(2.0, abs=0.06)  # encoder padding
    path = tmp_path / "clip.mp3"
    path.write_bytes(data)
    assert probe_file(path).duration_s == pytest.approx(info.duration_s)


def test_undecodable_data_raises_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="empty"):
        probe_duration(b"")
    with pytest.raises(SourceError, match="cannot decode audio data"):
        probe_duration(b"this is plain text, not audio " * 20)
    bad = tmp_path / "notes.wav"
    bad.write_bytes(b"RIFF....WAVEfmt nonsense")
    with pytest.raises(SourceError, match=str(bad)):
        probe_file(bad)
    with pytest.raises(SourceError, match="cannot read audio file"):
        probe_file(tmp_path / "missing.wav")
