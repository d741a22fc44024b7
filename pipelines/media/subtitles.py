"""Subtitles: WebVTT and SRT cues, written and read in one place.

The emulator's whisper answers, the local provider's transcripts, stitched long recordings
and the ``.vtt`` / ``.srt`` files next to an output all use these writers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Cue:
    """One subtitle: from ``start`` to ``end`` seconds, ``text``."""

    start: float
    end: float
    text: str


def stamp(seconds: float, sep: str = ".") -> str:
    """``HH:MM:SS.mmm`` (WebVTT) or, with ``sep=","``, ``HH:MM:SS,mmm`` (SRT)."""
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def webvtt(cues: Iterable[Cue]) -> str:
    """A WebVTT document."""
    lines = ["WEBVTT", ""]
    for cue in cues:
        lines += [f"{stamp(cue.start)} --> {stamp(cue.end)}", cue.text, ""]
    return "\n".join(lines)


def srt(cues: Iterable[Cue]) -> str:
    """An SRT document."""
    lines: list[str] = []
    for i, cue in enumerate(cues, 1):
        lines += [str(i), f"{stamp(cue.start, ',')} --> {stamp(cue.end, ',')}", cue.text, ""]
    return "\n".join(lines)


_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})"
_CUE_LINE = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}")


def _seconds(h: str | None, m: str, s: str, frac: str) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000


def parse_vtt(text: str) -> list[Cue]:
    """The cues of a WebVTT (or SRT) document; anything else in it is ignored."""
    cues: list[Cue] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = _CUE_LINE.match(lines[i])
        i += 1
        if not match:
            continue
        g = match.groups()
        body: list[str] = []
        while i < len(lines) and lines[i].strip():
            body.append(lines[i].strip())
            i += 1
        cues.append(Cue(_seconds(*g[:4]), _seconds(*g[4:]), " ".join(body)))
    return cues
