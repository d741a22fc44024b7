"""Prompt templates: Jinja2's sandbox, the columns a template reads, and rendering a row.

A generate job's ``prompt``, ``system`` and ``messages[].content`` are Jinja2 templates run
in :class:`jinja2.sandbox.SandboxedEnvironment` (a template cannot reach Python internals,
files or the network) with :class:`jinja2.StrictUndefined` (a name that is not a column is
an error, never an empty string). Columns are read by name, ``{{ title }}``, or for a name
that is not an identifier, ``{{ row["review text"] }}``. The columns a template reads are
found in its syntax tree when the job is loaded, so a column the input lacks is a load
error, before any row is read or neuron spent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

ROW = "row"  # the whole row, for column names that are not identifiers


class TemplateProblem(ValueError):
    """A template that cannot be used; the message says where and why."""


@cache
def _env() -> SandboxedEnvironment:
    # autoescape off: prompts are plain text, not HTML; keep_trailing_newline so a YAML
    # block scalar's last newline reaches the model as written
    return SandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
    )


@dataclass(frozen=True)
class Template:
    """A compiled template and the columns it reads."""

    source: str
    columns: tuple[str, ...]

    def render(self, row: Mapping[str, Any]) -> str:
        """The text for one row (``row`` maps every column the template reads)."""
        return str(_compiled(self.source).render({**row, ROW: row}))


@cache
def _compiled(source: str) -> Any:
    return _env().from_string(source)


def _row_columns(tree: nodes.Template) -> list[str]:
    """Columns read as ``row["name"]`` / ``row.name``; a computed index cannot be checked."""
    found: list[str] = []
    for node in tree.find_all((nodes.Getitem, nodes.Getattr)):
        assert isinstance(node, nodes.Getitem | nodes.Getattr)
        if not (isinstance(node.node, nodes.Name) and node.node.name == ROW):
            continue
        if isinstance(node, nodes.Getattr):
            found.append(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            found.append(node.arg.value)
        else:
            raise TemplateProblem(
                'row[...] must name a column with a quoted string, e.g. row["review text"]'
            )
    return found


@cache
def parse_template(source: str) -> Template:
    """Compile ``source``; raises :class:`TemplateProblem` with the line and reason."""
    try:
        tree = _env().parse(source)
        _compiled(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template error on its line {exc.lineno}: {exc.message}") from None
    names = sorted(meta.find_undeclared_variables(tree) - {ROW})
    columns = list(dict.fromkeys([*names, *_row_columns(tree)]))
    return Template(source, tuple(columns))


def template_columns(sources: Sequence[str | None]) -> list[str]:
    """Every column the templates read, in first-seen order (unparsable ones skipped: the
    job's checks report them)."""
    out: list[str] = []
    for source in sources:
        if source is None:
            continue
        try:
            out.extend(parse_template(source).columns)
        except TemplateProblem:
            continue
    return list(dict.fromkeys(out))
