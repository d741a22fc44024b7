"""Collecting a file's problems, each tied to a field and its line in the file.

Every problem of a file is found in one pass: a field whose value is missing or invalid is
marked *unknown*, and the rules that read it skip (rather than judge a stand-in), while
every other rule still runs.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field

from pipelines.core.errors import JobError

Loc = tuple[str | int, ...]


def format_loc(loc: Loc) -> str:
    """``("output", "keep", 2)`` as ``output.keep[2]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def closest(word: str, choices: Iterable[str], n: int = 1) -> list[str]:
    """The ``choices`` closest to ``word`` (case aside), best first; none when none is close."""
    by_folded: dict[str, str] = {}
    for choice in choices:
        by_folded.setdefault(choice.casefold(), choice)
    found = difflib.get_close_matches(word.casefold(), list(by_folded), n=n, cutoff=0.6)
    return [by_folded[f] for f in found]


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """``did you mean 'x'?`` for the closest choice, or ``""``."""
    if not isinstance(word, str):
        return ""
    found = closest(word, choices)
    return f"did you mean {found[0]!r}?" if found else ""


def _overlap(a: Loc, b: Loc) -> bool:
    """Whether one field contains the other (or they are the same)."""
    return a[: len(b)] == b or b[: len(a)] == a


@dataclass
class Problems:
    """Problems found in one file, each tied to a field and (through it) a line."""

    file: str
    lines: dict[Loc, int] = field(default_factory=dict)
    items: list[tuple[int, str, str]] = field(default_factory=list)
    values: int = 0  # nodes walked, aliases expanded
    unknown: set[Loc] = field(default_factory=set)  # fields missing or invalid
    flagged: set[Loc] = field(default_factory=set)  # fields with a problem

    def line(self, loc: Loc) -> int:
        """The line of ``loc``, or of its nearest parent the file spells out."""
        for end in range(len(loc), 0, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return 1

    def add(self, loc: Loc, message: str) -> None:
        """Record a problem with the field at ``loc``."""
        self.flagged.add(loc)
        entry = (self.line(loc), format_loc(loc), message)
        if entry not in self.items:
            self.items.append(entry)

    def forget(self, loc: Loc) -> None:
        """Mark the value at ``loc`` unknown: it is missing or invalid."""
        self.unknown.add(loc)

    def known(self, *locs: Loc) -> bool:
        """Whether the values at ``locs`` are the file's own, valid ones (a rule reading
        them may run)."""
        return not any(_overlap(loc, u) for loc in locs for u in self.unknown)

    def clean(self, *locs: Loc) -> bool:
        """Known, and no problem was found with them (nor with what contains them)."""
        return self.known(*locs) and not any(_overlap(loc, f) for loc in locs for f in self.flagged)

    def render(self) -> str:
        """One ``FILE:LINE: field: message`` line per problem, in file order."""
        rows = sorted(self.items, key=lambda item: item[0])
        return "\n".join(
            f"{self.file}:{line}: {name}: {msg}" if name else f"{self.file}:{line}: {msg}"
            for line, name, msg in rows
        )

    def raise_if_any(self) -> None:
        """Raise one :class:`JobError` carrying every problem found so far."""
        if self.items:
            raise JobError(self.render())
