"""Audio probing: duration, format, sample rate and channels of a file or an in-memory blob.

Used by the emulator (whisper bills by the real decoded duration) and by the audio source.
libsndfile (``soundfile``) reads WAV/FLAC/OGG headers without decoding; everything else
(mp3, m4a, webm, ...) and anything libsndfile rejects goes to FFmpeg through PyAV, whose
container duration is also header-based.

A header is a claim, not a measurement: a FLAC STREAMINFO or an MP3 Info frame can say
1,193 hours for a 5-second file, and a duration reserves neurons. So a header duration is
believed only when the file's bytes can hold that much audio: at its exact byte rate for
uncompressed PCM, else at :data:`MIN_BITS_PER_SECOND` (8 kbit/s, the lowest MPEG audio
rate). Above that, or when the container states no duration, the audio is decoded and its
samples counted. A lie can therefore inflate a duration at most to what the file's size
allows at 8 kbit/s (16 times a 128 kbit/s MP3's real length), never to hours per kilobyte;
a real low-bitrate file is only decoded, not misjudged.
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
#: The lowest bit rate a compressed file's header duration is believed at.
MIN_BITS_PER_SECOND = 8_000
# Uncompressed libsndfile subtypes and their bits per sample: their byte rate is exact.
_PCM_BITS = {
    "PCM_S8": 8,
    "PCM_U8": 8,
    "PCM_16": 16,
    "PCM_24": 24,
    "PCM_32": 32,
    "FLOAT": 32,
    "DOUBLE": 64,
    "ULAW": 8,
    "ALAW": 8,
}
# Header durations within this many seconds of the bound pass (rounding, tiny files).
_SLACK_S = 1.0


@dataclass(frozen=True)
class AudioInfo:
    """What a probe found."""

    duration_s: float
    format: str
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class _Header:
    """A header's claims, and the lowest bit rate the file can hold its audio at."""

    info: AudioInfo
    min_bits_per_second: float = MIN_BITS_PER_SECOND

    def believable(self, size: int) -> bool:
        """Whether ``size`` bytes can hold the claimed duration."""
        most = size * 8 / self.min_bits_per_second
        return self.info.duration_s <= most + _SLACK_S


def probe_duration(data: bytes) -> float:
    """Duration in seconds of an encoded audio blob; raises :class:`SourceError` if undecodable."""
    return probe_bytes(data).duration_s


def probe_bytes(data: bytes, *, name: str = "audio data") -> AudioInfo:
    """Probe an in-memory audio file."""
    if not data:
        raise SourceError(f"cannot decode {name}: it is empty")
    return _probe(lambda: io.BytesIO(data), name, len(data))


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
    return _probe(lambda: str(p), f"audio file {p}", size, try_sndfile=not ffmpeg_only)


def _probe(open_source: Any, name: str, size: int, *, try_sndfile: bool = True) -> AudioInfo:
    """The header's claims if ``size`` bytes can hold them, else the decoded duration."""
    header = _probe_sndfile(open_source()) if try_sndfile else None
    try:
        if header is None:
            header = _probe_av(open_source(), decode=False)
        if header.believable(size):
            return header.info
        # the claim is more audio than the bytes can hold: count the samples instead
        measured = _probe_av(open_source(), decode=True).info
    except SourceError as exc:
        raise SourceError(f"cannot decode {name}: {exc.message}") from None
    return AudioInfo(
        measured.duration_s, header.info.format, measured.sample_rate, measured.channels
    )


def _probe_sndfile(source: str | BinaryIO) -> _Header | None:
    import soundfile

    try:
        info = soundfile.info(source)
    except Exception:  # libsndfile raises several types; any of them means "try FFmpeg"
        return None
    fmt = str(info.format)
    if fmt not in _SNDFILE_FORMATS or info.samplerate <= 0:
        return None
    found = AudioInfo(
        duration_s=float(info.frames) / float(info.samplerate),
        format=fmt.lower(),
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
    )
    bits = _PCM_BITS.get(str(info.subtype))
    if bits is None:
        return _Header(found)
    return _Header(found, max(1.0, float(bits * info.samplerate * max(1, info.channels))))


def _probe_av(source: str | BinaryIO, *, decode: bool) -> _Header:
    """What FFmpeg says; with ``decode`` (or when it states no duration) the duration is
    the decoded samples' count."""
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
        duration = None if decode else _stated_duration(container, stream)
        if duration is None:
            duration = _decoded_duration(container, stream)
        if sample_rate <= 0 or duration is None:
            raise SourceError("no decodable audio found")
        fmt = str(container.format.name).split(",")[0]
        found = AudioInfo(
            duration_s=duration, format=fmt, sample_rate=sample_rate, channels=channels
        )
        # uncompressed PCM has an exact byte rate; FFmpeg states it as the bit rate
        exact = str(ctx.name).startswith("pcm_") and (ctx.bit_rate or 0) > 0
        return _Header(found, float(ctx.bit_rate or 0)) if exact else _Header(found)
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
