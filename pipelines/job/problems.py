"""Collecting a job file's problems, each tied to a field and its line in the file."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.core.errors import JobError

Loc = tuple[str | int, ...]


def format_loc(loc: Loc) -> str:
    """``("output", "keep", 2)`` as ``output.keep[2]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class Problems:
    """Problems found in one job file, each tied to a field and (through it) a line."""

    file: str
    lines: dict[Loc, int] = field(default_factory=dict)
    items: list[tuple[int, str, str]] = field(default_factory=list)
    values: int = 0  # nodes walked, aliases expanded

    def line(self, loc: Loc) -> int:
        """The line of ``loc``, or of its nearest parent the file spells out."""
        for end in range(len(loc), 0, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return 1

    def add(self, loc: Loc, message: str) -> None:
        """Record a problem with the field at ``loc``."""
        entry = (self.line(loc), format_loc(loc), message)
        if entry not in self.items:
            self.items.append(entry)

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
