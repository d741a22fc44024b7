"""Audio durations that cannot be a lie (issue 11): a header whose duration is more than the
file's bytes can hold is not believed; the file is decoded and its samples counted.

The hostile file of the issue is a 5-second FLAC whose STREAMINFO claims 2^36 - 1 samples
(1,193 hours at 16 kHz): ``plan`` showed 294 days and every ``run`` stopped at the cap
before the files after it. The same trick works on an MP3's Xing/Info frame count.
"""

from __future__ import annotations

import io
import re
import struct
from pathlib import Path

import av
import numpy as np
import polars as pl
import pytest
import soundfile as sf
from click.testing import CliRunner

from pipelines.cli import main
from pipelines.job.load import load_job
from pipelines.job.spec import Job
from pipelines.media import audio as media_audio
from pipelines.media.audio import probe_bytes, probe_file
from pipelines.sources import open_source

RATE = 16_000


def tone(seconds: float) -> np.ndarray:
    """A tone with some noise: real recordings do not compress to a few bits a second."""
    t = np.arange(round(seconds * RATE)) / RATE
    noise = np.random.default_rng(7).normal(0, 0.05, t.shape)
    return (0.3 * np.sin(2 * np.pi * 330 * t) + noise).astype("float32")


def flac_bytes(seconds: float) -> bytes:
    out = io.BytesIO()
    sf.write(out, tone(seconds), RATE, format="FLAC")
    return out.getvalue()


def mp3_bytes(seconds: float) -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=RATE)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(tone(seconds)[None, :], format="flt", layout="mono")
        frame.sample_rate = RATE
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return out.getvalue()


def lying_flac(seconds: float) -> bytes:
    """A FLAC whose STREAMINFO says 2^36 - 1 samples (1,193 hours at 16 kHz)."""
    data = bytearray(flac_bytes(seconds))
    at = 8 + 10  # "fLaC", the block header, then min/max block and frame sizes
    packed = int.from_bytes(data[at : at + 8], "big") | ((1 << 36) - 1)
    data[at : at + 8] = packed.to_bytes(8, "big")
    return bytes(data)


def lying_mp3(seconds: float) -> bytes:
    """An MP3 whose Info frame claims 2^28 frames."""
    data = bytearray(mp3_bytes(seconds))
    at = max(data.find(b"Xing"), data.find(b"Info"))
    assert at > 0 and struct.unpack(">I", data[at + 4 : at + 8])[0] & 1  # frame count present
    data[at + 8 : at + 12] = struct.pack(">I", 1 << 28)
    return bytes(data)


LIARS = {"flac": lying_flac, "mp3": lying_mp3}


@pytest.mark.parametrize("kind", sorted(LIARS))
def test_the_header_lies_and_the_real_duration_is_measured(tmp_path: Path, kind: str) -> None:
    data = LIARS[kind](5.0)
    path = tmp_path / f"liar.{kind}"
    path.write_bytes(data)
    assert probe_file(path).duration_s == pytest.approx(5.0, abs=0.1)
    # the emulator bills with probe_bytes: it must not believe the header either
    assert probe_bytes(data).duration_s == pytest.approx(5.0, abs=0.1)


def test_believable_headers_are_read_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded a file whose header is believable")

    monkeypatch.setattr(media_audio, "_decoded_duration", no_decoding)
    (tmp_path / "a.flac").write_bytes(flac_bytes(3.0))
    (tmp_path / "b.mp3").write_bytes(mp3_bytes(3.0))
    sf.write(tmp_path / "c.wav", tone(3.0), RATE, subtype="PCM_16")
    for name in ("a.flac", "b.mp3", "c.wav"):
        assert probe_file(tmp_path / name).duration_s == pytest.approx(3.0, abs=0.1)


def test_a_lie_that_cannot_be_decoded_is_an_unreadable_file(tmp_path: Path) -> None:
    data = bytearray(lying_flac(5.0))
    cut = data[: len(data) // 8]  # the header survives, the audio frames do not
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "cut.flac").write_bytes(bytes(cut))
    job = _job(tmp_path)
    source = open_source(job)
    (row,) = next(iter(source.iter_batches(["path", "duration_s", "error"]))).to_dicts()
    # what is left decodes to under a second, or to nothing: never the header's hours
    if row["error"] is None:
        assert row["duration_s"] < 1.0
    else:
        assert row["duration_s"] is None


def _job(tmp: Path) -> Job:
    (tmp / "job.yaml").write_text(
        "name: liars\nsource: {kind: audio, path: audio}\n"
        'task: {kind: transcribe, model: "@cf/openai/whisper"}\n'
        "output: {path: out/t.parquet}\n",
        encoding="utf-8",
    )
    return load_job(tmp / "job.yaml")


def _folder(tmp: Path) -> Path:
    folder = tmp / "audio"
    folder.mkdir(exist_ok=True)
    (folder / "a_liar.flac").write_bytes(lying_flac(5.0))
    (folder / "b_liar.mp3").write_bytes(lying_mp3(4.0))
    (folder / "c_fine.flac").write_bytes(flac_bytes(6.0))
    _job(tmp)
    return tmp / "job.yaml"


def test_plan_counts_the_real_minutes(tmp_path: Path) -> None:
    job = _folder(tmp_path)
    result = CliRunner().invoke(main, ["plan", str(job)])
    assert result.exit_code == 0, result.output
    minutes = re.search(r"usage\s+([\d.,]+) audio minutes", result.output)
    assert minutes is not None, result.output
    assert float(minutes.group(1).replace(",", "")) < 0.5  # 15 s, not 1,193 hours
    assert re.search(r"days\s+0\.00", result.output), result.output


def test_run_transcribes_every_file_at_its_real_length(tmp_path: Path, env: dict[str, str]) -> None:
    job = _folder(tmp_path)
    result = CliRunner().invoke(main, ["run", "--no-progress", str(job)])
    assert result.exit_code == 0, result.output
    out = pl.read_parquet(tmp_path / "out/t.parquet").sort("path")
    assert out["path"].to_list() == ["a_liar.flac", "b_liar.mp3", "c_fine.flac"]
    assert out["duration_s"].to_list() == pytest.approx([5.0, 4.0, 6.0], abs=0.1)
