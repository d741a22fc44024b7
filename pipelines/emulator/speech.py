"""Emulated transcripts: pseudo-words derived from a hash of the audio, timed over its real length.

The words mean nothing, but everything a pipeline checks is real: the same audio always
gives the same transcript, word timings start at 0, never go backwards and end at the
decoded duration, and whisper-large-v3-turbo reports that duration in
``transcription_info`` as Cloudflare's does.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from pipelines.catalog.models import ModelInfo
from pipelines.emulator.inputs import ModelInput
from pipelines.media.subtitles import Cue, webvtt

_VOCAB = (
    "the a and to of in is it that we you for on with this was are be have at they "
    "not but from or one all what there can about when which their will would so if "
    "time people data model river station morning light window music city road water "
    "green quiet number little paper garden small market winter summer open close "
    "begin follow answer carry listen remember simple clear early later"
).split()
_WORDS_PER_SECOND = 2.5
_CUE_WORDS = 8
_SEGMENT_WORDS = 12

Word = dict[str, Any]


def _rng(audio: bytes, seed: int) -> random.Random:
    digest = hashlib.blake2b(audio, digest_size=8, key=str(seed).encode()).digest()
    return random.Random(int.from_bytes(digest, "big"))


def pseudo_words(audio: bytes, duration: float, seed: int) -> list[Word]:
    """Words with ``start``/``end`` spread evenly over ``[0, duration]``."""
    if duration <= 0:
        return []
    rng = _rng(audio, seed)
    n = max(1, round(duration * _WORDS_PER_SECOND))
    slot = duration / n
    out: list[Word] = []
    for i in range(n):
        start = i * slot
        end = duration if i == n - 1 else (i + 1) * slot - 0.15 * slot
        out.append({"word": rng.choice(_VOCAB), "start": round(start, 3), "end": round(end, 3)})
    return out


def _chunks(items: list[Word], size: int) -> list[list[Word]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def vtt(words: list[Word]) -> str:
    """A WebVTT document with one cue per few words."""
    return webvtt(
        Cue(group[0]["start"], group[-1]["end"], " ".join(w["word"] for w in group))
        for group in _chunks(words, _CUE_WORDS)
    )


def _sentence(words: list[Word]) -> str:
    text = " ".join(w["word"] for w in words)
    return (text[:1].upper() + text[1:] + ".") if text else ""


def transcribe(model: ModelInfo, inp: ModelInput, seed: int) -> dict[str, Any]:
    """The output object of a whisper-family model."""
    audio = inp.audio or b""
    duration = inp.audio_seconds
    words = pseudo_words(audio, duration, seed)
    if model.wire != "base64":
        text = _sentence(words)
        return {"text": text, "word_count": len(words), "words": words, "vtt": vtt(words)}
    p = inp.payload
    segments = []
    for chunk in _chunks(words, _SEGMENT_WORDS):
        segments.append(
            {
                "start": chunk[0]["start"],
                "end": chunk[-1]["end"],
                "text": " " + _sentence(chunk),
                "temperature": 0.0,
                "avg_logprob": round(-0.15 - 0.1 * (len(chunk) % 3), 4),
                "compression_ratio": 1.35,
                "no_speech_prob": 0.02,
                "words": chunk,
            }
        )
    text = " ".join(s["text"].strip() for s in segments)
    prefix = str(p.get("prefix", "")).strip()
    if prefix:
        text = f"{prefix} {text}".strip()
    language = str(p.get("language") or "en")
    info = {
        "language": language,
        "language_probability": 1.0 if "language" in p else 0.97,
        "duration": round(duration, 3),
        "duration_after_vad": round(duration * (0.92 if p.get("vad_filter") else 1.0), 3),
    }
    return {
        "text": text,
        "word_count": len(text.split()),
        "segments": segments,
        "vtt": vtt(words),
        "transcription_info": info,
    }
