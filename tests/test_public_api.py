"""The public API: every exported name resolves, the list is deliberate, and the lazy
loading behind it (PEP 562) matches what type checkers see."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pipelines


def test_every_exported_name_resolves() -> None:
    for name in pipelines.__all__:
        assert getattr(pipelines, name) is not None, name


def test_the_job_api_is_exported() -> None:
    for name in ("load_job", "plan_job", "run_job", "arun", "running_emulator", "Ledger"):
        assert name in pipelines.__all__


def type_checking_imports() -> dict[str, str]:
    """Name -> module of every import in ``pipelines/__init__.py``'s TYPE_CHECKING block."""
    tree = ast.parse(Path(pipelines.__file__).read_text(encoding="utf-8"))
    (block,) = [
        node
        for node in tree.body
        if isinstance(node, ast.If)
        and isinstance(node.test, ast.Name)
        and node.test.id == "TYPE_CHECKING"
    ]
    return {
        alias.name: node.module or ""
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


def test_the_lazy_table_is_the_type_checkers_view() -> None:
    # what mypy sees and what runs must be the same names from the same modules
    assert type_checking_imports() == pipelines._LAZY
    assert set(pipelines._LAZY) | {"__version__"} == set(pipelines.__all__)


def test_names_are_listed_before_they_are_loaded() -> None:
    assert set(pipelines.__all__) <= set(dir(pipelines))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = pipelines.no_such_name
    assert not hasattr(pipelines, "no_such_name")
