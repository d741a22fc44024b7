"""Audio probing: duration, format, sample rate and channels of a file or an in-memory blob.

Used by the emulator (whisper bills by the real decoded duration) and by the audio source.
libsndfile (``soundfile``) reads WAV/FLAC/OGG headers without decoding; everything else
(mp3, m4a, webm, ...) and anything libsndfile rejects goes to FFmpeg through PyAV, whose
container duration is also header-based. Only when a container states no duration do we
decode, and then only to count samples.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pipelines.core.errors import SourceError

# libsndfile's own decoders; its MP3 support is newer and less tolerant than FFmpeg's.
_SNDFILE_FORMATS = {"WAV", "WAVEX", "RF64", "W64", "FLAC", "OGG", "AIFF", "AU", "CAF"}
_FFMPEG_SUFFIXES = {".mp3", ".m4a", ".mp4", ".aac", ".webm", ".opus", ".wma"}


@dataclass(frozen=True)
class AudioInfo:
    """What a probe found."""

    duration_s: float
    format: str
    sample_rate: int
    channels: int


def probe_duration(data: bytes) -> float:
    """Duration in seconds of an encoded audio blob; raises :class:`SourceError` if undecodable."""
    return probe_bytes(data).duration_s


def probe_bytes(data: bytes, *, name: str = "audio data") -> AudioInfo:
    """Probe an in-memory audio file."""
    if not data:
        raise SourceError(f"cannot decode {name}: it is empty")
    return _probe(lambda: io.BytesIO(data), name)


def probe_file(path: str | Path) -> AudioInfo:
    """Probe an audio file on disk, reading its header where the format allows."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise SourceError(f"cannot read audio file {p}: {exc.strerror or exc}") from None
    if size == 0:
        raise SourceError(f"cannot decode audio file {p}: it is empty")
    # libsndfile would only reject these (noisily, on stderr): go to FFmpeg directly
    ffmpeg_only = p.suffix.lower() in _FFMPEG_SUFFIXES
    return _probe(lambda: str(p), f"audio file {p}", try_sndfile=not ffmpeg_only)


def _probe(open_source: Any, name: str, *, try_sndfile: bool = True) -> AudioInfo:
    info = _probe_sndfile(open_source()) if try_sndfile else None
    if info is not None:
        return info
    try:
        return _probe_av(open_source())
    except SourceError as exc:
        raise SourceError(f"cannot decode {name}: {exc.message}") from None


def _probe_sndfile(source: str | BinaryIO) -> AudioInfo | None:
    import soundfile

    try:
        info = soundfile.info(source)
    except Exception:  # libsndfile raises several types; any of them means "try FFmpeg"
        return None
    fmt = str(info.format)
    if fmt not in _SNDFILE_FORMATS or info.samplerate <= 0:
        return None
    return AudioInfo(
        duration_s=float(info.frames) / float(info.samplerate),
        format=fmt.lower(),
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
    )


def _probe_av(source: str | BinaryIO) -> AudioInfo:
    import av

    try:
        container = av.open(source, mode="r")
    except Exception as exc:  # av.FFmpegError, OSError, ...
        raise SourceError(_reason(exc)) from None
    try:
        if not container.streams.audio:
            raise SourceError("no audio stream found")
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        sample_rate = int(ctx.sample_rate or getattr(stream, "rate", 0) or 0)
        channels = int(ctx.layout.nb_channels) if ctx.layout is not None else 0
        duration = _stated_duration(container, stream)
        if duration is None:
            duration = _decoded_duration(container, stream)
        if sample_rate <= 0 or duration is None:
            raise SourceError("no decodable audio found")
        fmt = str(container.format.name).split(",")[0]
        return AudioInfo(
            duration_s=duration, format=fmt, sample_rate=sample_rate, channels=channels
        )
    finally:
        container.close()


def _stated_duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return float(container.duration) / 1_000_000.0  # AV_TIME_BASE is microseconds
    return None


def _decoded_duration(container: Any, stream: Any) -> float | None:
    samples = 0
    rate = 0
    try:
        for frame in container.decode(stream):
            samples += int(frame.samples)
            rate = int(frame.sample_rate or rate)
    except Exception as exc:
        raise SourceError(_reason(exc)) from None
    if samples == 0 or rate <= 0:
        return None
    return samples / rate


def _reason(exc: Exception) -> str:
    text = str(exc)
    # FFmpeg messages look like "[Errno 1094995529] Invalid data found ...: '<none>'"
    if "]" in text:
        text = text.split("]", 1)[1]
    text = text.split(": '", 1)[0].strip()
    return text or type(exc).__name__
