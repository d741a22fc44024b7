"""Long recordings: cut into chunks one whisper request can take, and the answers stitched back.

Cutting decodes with PyAV (FFmpeg), resamples to 16 kHz mono (what whisper works on anyway,
so nothing is lost) and re-encodes each chunk as 16-bit WAV, whose size is known in advance
(32 kB a second) and which every whisper endpoint decodes. Each cut falls on the quietest
moment shortly before the limit, so a word is rarely split in two. Stitching shifts every
word and cue by its chunk's start and keeps timestamps monotonic across chunk borders.
"""

from __future__ import annotations

import io
import wave
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.media.subtitles import Cue, srt, webvtt
from pipelines.media.subtitles import parse_vtt as parse_vtt

SAMPLE_RATE = 16_000
_BYTES_PER_SECOND = SAMPLE_RATE * 2
_WAV_HEADER = 44
_WINDOW = SAMPLE_RATE // 50  # 20 ms energy windows to find a pause
_SEARCH_S = 5.0  # how far before the limit a pause is looked for
_CUE_WORDS = 8


@dataclass(frozen=True)
class Chunk:
    """A piece of a recording, as the WAV bytes sent for it."""

    start_s: float
    duration_s: float
    data: bytes = field(repr=False)


def chunk_seconds(max_bytes: int, max_seconds: float) -> float:
    """The longest chunk that stays within both limits once encoded."""
    by_size = (max_bytes - _WAV_HEADER) / _BYTES_PER_SECOND
    return max(1.0, min(max_seconds, by_size))


def _pcm(path: Path) -> Iterator[np.ndarray]:
    """The recording as 16 kHz mono int16 blocks, decoded as it is read."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise ValueError("no audio stream found")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                yield out.to_ndarray().reshape(-1)
        for out in resampler.resample(None):
            yield out.to_ndarray().reshape(-1)


def wav_bytes(samples: np.ndarray) -> bytes:
    """16 kHz mono 16-bit WAV of ``samples`` (int16)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


def _quiet_point(buf: np.ndarray, limit: int) -> int:
    """Where to cut ``buf`` (longer than ``limit``): the quietest moment before ``limit``."""
    search = min(int(_SEARCH_S * SAMPLE_RATE), limit // 4)
    lo = limit - search
    n = search // _WINDOW
    if n == 0:
        return limit
    region = buf[lo : lo + n * _WINDOW].astype(np.float32)
    energy = (region.reshape(n, _WINDOW) ** 2).mean(axis=1)
    # of equally quiet windows take the last one, so chunks stay as long as allowed
    best = n - 1 - int(np.argmin(energy[::-1]))
    return lo + best * _WINDOW + _WINDOW // 2


def cut(path: Path, max_seconds: float) -> list[Chunk]:
    """``path`` decoded and cut into WAV chunks of at most ``max_seconds`` each.

    Raises whatever PyAV raises for undecodable data; the caller names the file.
    """
    limit = max(_WINDOW, int(max_seconds * SAMPLE_RATE))
    chunks: list[Chunk] = []
    pending: list[np.ndarray] = []
    held = start = 0

    def emit(samples: np.ndarray) -> None:
        nonlocal start
        chunks.append(Chunk(start / SAMPLE_RATE, len(samples) / SAMPLE_RATE, wav_bytes(samples)))
        start += len(samples)

    for block in _pcm(path):
        pending.append(block)
        held += len(block)
        if held <= limit:
            continue
        buf = np.concatenate(pending)
        while len(buf) > limit:
            at = _quiet_point(buf, limit)
            emit(buf[:at])
            buf = buf[at:]
        pending, held = [buf], len(buf)
    if held:
        emit(np.concatenate(pending))
    return chunks


# -- stitching ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float


@dataclass
class Transcript:
    """One recording's transcript, whatever number of requests it took."""

    text: str
    word_count: int
    language: str | None
    words: list[Word]
    cues: list[Cue]

    def vtt(self) -> str:
        return webvtt(self.cues)

    def srt(self) -> str:
        return srt(self.cues)


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
        return float(value)
    return None


def _words_of(result: dict[str, Any]) -> list[Word]:
    raw = result.get("words")
    if not isinstance(raw, list):  # whisper-large-v3-turbo: words live in the segments
        raw = [
            w
            for seg in result.get("segments") or []
            if isinstance(seg, dict)
            for w in seg.get("words") or []
        ]
    out: list[Word] = []
    for w in raw:
        if not isinstance(w, dict):
            continue
        start, end = _number(w.get("start")), _number(w.get("end"))
        if start is not None and end is not None:
            out.append(Word(str(w.get("word", "")).strip(), start, end))
    return out


def _cues_of(result: dict[str, Any], words: list[Word], duration: float) -> list[Cue]:
    segments = result.get("segments")
    if isinstance(segments, list) and segments:
        cues = []
        for seg in segments:
            if not isinstance(seg, dict):
                continue
            start, end = _number(seg.get("start")), _number(seg.get("end"))
            if start is not None and end is not None:
                cues.append(Cue(start, end, str(seg.get("text", "")).strip()))
        return cues
    if isinstance(result.get("vtt"), str) and (cues := parse_vtt(result["vtt"])):
        return cues
    if words:
        groups = [words[i : i + _CUE_WORDS] for i in range(0, len(words), _CUE_WORDS)]
        return [Cue(g[0].start, g[-1].end, " ".join(w.word for w in g)) for g in groups]
    text = str(result.get("text", "")).strip()
    return [Cue(0.0, duration, text)] if text else []


class _Clock:
    """Shifts chunk-relative times to the recording; nothing starts before the last one ended."""

    def __init__(self) -> None:
        self.last = 0.0

    def place(self, start: float, end: float, offset: float, length: float) -> tuple[float, float]:
        lo = max(offset + min(max(start, 0.0), length), self.last)
        hi = max(offset + min(max(end, 0.0), length), lo)
        self.last = hi
        return round(lo, 3), round(hi, 3)


def stitch(results: Sequence[dict[str, Any]], spans: Sequence[tuple[float, float]]) -> Transcript:
    """One transcript from the answers for consecutive chunks ``spans`` (start, duration)."""
    texts: list[str] = []
    words: list[Word] = []
    cues: list[Cue] = []
    count = 0
    languages: Counter[str] = Counter()
    word_clock, cue_clock = _Clock(), _Clock()
    for result, (offset, length) in zip(results, spans, strict=True):
        text = str(result.get("text", "")).strip()
        if text:
            texts.append(text)
        chunk_words = _words_of(result)
        n = _number(result.get("word_count"))
        count += int(n) if n is not None else len(text.split())
        for w in chunk_words:
            words.append(Word(w.word, *word_clock.place(w.start, w.end, offset, length)))
        for c in _cues_of(result, chunk_words, length):
            cues.append(Cue(*cue_clock.place(c.start, c.end, offset, length), c.text))
        info = result.get("transcription_info")
        if isinstance(info, dict) and isinstance(info.get("language"), str):
            languages[info["language"]] += 1
    language = languages.most_common(1)[0][0] if languages else None
    return Transcript(" ".join(texts), count, language, words, cues)
