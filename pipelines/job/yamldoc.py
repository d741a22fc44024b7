"""A YAML file read for checking: its text, its data, and the line of every key.

Used for job files and for the global config file, so both report problems the same way:
``FILE:LINE: field: message``. A syntax error is one located line; a value starting with an
unquoted ``@`` or backtick (YAML reserves both) gets the quoted spelling to use instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from pipelines.core.errors import JobError
from pipelines.job.problems import Loc, Problems

# A job file holds a few dozen values; YAML aliases can make a small file expand to billions
# ("billion laughs"), which would take hours to walk and validate.
MAX_VALUES = 10_000
# Characters YAML reserves: a plain (unquoted) value cannot start with them.
RESERVED = "@`"
# The key a flow-style value belongs to: `... model: ` at the end of what precedes it.
_KEY_BEFORE = re.compile(r"([^\s{}\[\],:]+)\s*:\s*$")
# Keys to flag while walking (credentials in a job file): a predicate and its message.
KeyFlag = tuple[Callable[[str], bool], str]


def read_text(path: Path, shown: str, what: str = "job file") -> str:
    """The file's text; a :class:`JobError` naming ``shown`` when it cannot be read."""
    if path.is_dir():
        raise JobError(f"{shown}: is a directory; give a {what} (.yaml)")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise JobError(f"{shown}: no such {what}") from None
    except OSError as exc:
        raise JobError(f"{shown}: cannot read the {what}: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise JobError(f"{shown}:{line}: the {what} is not UTF-8 text") from None


def reserved_hint(text: str, mark: yaml.Mark | None) -> str | None:
    """How to write a value that starts with a reserved character, when the YAML error at
    ``mark`` is one (decided by the character there, not by PyYAML's wording)."""
    if mark is None or not 0 <= mark.index < len(text) or text[mark.index] not in RESERVED:
        return None
    start = text.rfind("\n", 0, mark.index) + 1
    end = text.find("\n", mark.index)
    before, rest = text[start : mark.index], text[mark.index : end if end >= 0 else None]
    if "{" in before or "[" in before:  # flow style: the value ends at the next , ] or }
        rest = re.split(r"[,\]}]", rest, maxsplit=1)[0]
    value = re.split(r"\s#", rest, maxsplit=1)[0].strip()
    quoted = json.dumps(value, ensure_ascii=False)  # a valid YAML double-quoted scalar
    key = _KEY_BEFORE.search(before)
    return (
        f"a value cannot start with {json.dumps(text[mark.index])} unless quoted; "
        f"quote it: {f'{key.group(1)}: ' if key else ''}{quoted}"
    )


def compose(text: str, shown: str) -> tuple[Any, yaml.Node | None]:
    """Parse once, keeping the node tree (for line numbers) and the plain data."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{shown}:{mark.line + 1}" if mark else shown
        hint = reserved_hint(text, exc.problem_mark)
        if hint is not None:
            raise JobError(f"{where}: {hint}") from None
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        col = f" (column {mark.column + 1})" if mark else ""
        raise JobError(f"{where}: invalid YAML: {what}{col}") from None
    except yaml.YAMLError as exc:
        raise JobError(f"{shown}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return data, node


def walk(
    node: yaml.Node,
    problems: Problems,
    *,
    flag_key: KeyFlag | None = None,
) -> None:
    """Record each key's line in ``problems``; flag duplicate keys, and keys for which
    ``flag_key`` (a predicate and its message) holds, on the way."""
    _walk(node, (), problems, set(), flag_key)


def _walk(
    node: yaml.Node,
    loc: Loc,
    problems: Problems,
    stack: set[int],
    flag_key: KeyFlag | None,
) -> None:
    if id(node) in stack:  # a recursive alias; the data itself is checked by pydantic
        return
    problems.values += 1
    if problems.values > MAX_VALUES:
        raise JobError(
            f"{problems.file}:{node.start_mark.line + 1}: the file holds more than "
            f"{MAX_VALUES:,} values once its YAML aliases (*name) are expanded; "
            "a job needs a few dozen: remove the aliases"
        )
    stack.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                _walk(value, loc, problems, stack, flag_key)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = str(key_node.value)
            here = (*loc, key)
            problems.lines[here] = key_node.start_mark.line + 1
            if key in seen:
                problems.add(here, "duplicate key (the later value would silently win)")
            seen.add(key)
            if flag_key is not None and flag_key[0](key):
                problems.add(here, flag_key[1])
            _walk(value, here, problems, stack, flag_key)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            problems.lines.setdefault((*loc, i), item.start_mark.line + 1)
            _walk(item, (*loc, i), problems, stack, flag_key)
    stack.discard(id(node))
