"""Write the sample recordings ``jobs/transcribe_archive.yaml`` reads (or any folder).

``python3 sample_data/audio/generate.py [FOLDER]`` speaks a few short English sentences
with espeak-ng, converts them with sox (16 kHz mono WAV, FLAC, Ogg Vorbis) and PyAV (MP3),
and adds ``broken.mp3``, garbage bytes with an audio name. Without espeak-ng or sox the
clips are synthetic tones with pauses instead (same names and formats), so the script
always works; only the transcripts differ. Every file stays well under 100 kB.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
RATE = 16_000
CLIPS = {
    "greeting.wav": "Hello, and welcome to the archive.",
    "interviews/weather.flac": "The weather today is cold and rainy in the north.",
    "interviews/market.ogg": "Prices at the morning market went up again this week.",
    "news.mp3": "In other news, the river station opens on Monday.",
}


def have_speech() -> bool:
    """Whether espeak-ng and sox are installed."""
    return bool(shutil.which("espeak-ng") and shutil.which("sox"))


def _spoken(text: str, wav: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "165", "-w", str(raw), text], check=True)
        subprocess.run(
            ["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(wav)], check=True
        )


def _synthetic(text: str, wav: Path) -> None:
    # one short tone per word, with pauses: stands in for speech when espeak-ng is missing
    rng = np.random.default_rng(len(text))
    parts = []
    for _ in text.split():
        t = np.arange(int(RATE * 0.25)) / RATE
        parts.append(0.2 * np.sin(2 * np.pi * rng.uniform(180, 400) * t))
        parts.append(np.zeros(int(RATE * 0.1)))
    sf.write(wav, np.concatenate(parts).astype("float32"), RATE, subtype="PCM_16")


def _mp3(wav: Path, out: Path) -> None:
    import av

    data, rate = sf.read(wav, dtype="float32")
    with av.open(str(out), "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=rate)
        stream.bit_rate = 32_000
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(data[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


def generate(folder: Path, *, speech: bool | None = None) -> list[Path]:
    """Write the clips and ``broken.mp3`` under ``folder``; returns the files written."""
    speech = have_speech() if speech is None else speech
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in CLIPS.items():
            out = folder / name
            out.parent.mkdir(parents=True, exist_ok=True)
            wav = out if out.suffix == ".wav" else Path(tmp) / "clip.wav"
            (_spoken if speech else _synthetic)(text, wav)
            if out.suffix in (".flac", ".ogg"):
                data, rate = sf.read(wav, dtype="int16")
                sf.write(out, data, rate, format=out.suffix[1:].upper())
            elif out.suffix == ".mp3":
                _mp3(wav, out)
            written.append(out)
    broken = folder / "broken.mp3"
    broken.write_bytes(random.Random(5).randbytes(4096))
    return [*written, broken]


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    for path in generate(target):
        print(f"{path}  {path.stat().st_size:,} bytes")
