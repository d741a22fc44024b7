"""The package's shape, checked: layers only import downwards, and no module imports itself
back through others (no import cycles, in-function imports included).

The layer order is the one ARCHITECTURE.md draws; a module may import from its own layer
and the layers below it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "pipelines"

# Lowest first. The package root (the public facade) and ``__main__`` sit above them all.
LAYERS = [
    "core",
    "catalog",
    "media",
    "emulator",
    "job",
    "sources",
    "tasks",
    "providers",
    "budget",
    "output",
    "run",
    "ops",
    "cli",
]
TOP = len(LAYERS)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imports_of(path: Path, name: str, known: set[str]) -> Iterator[str]:
    """Every pipelines module ``path`` imports, at any depth of the file (functions too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "pipelines":
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != "pipelines":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if sub in known else base


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return TOP
    assert parts[1] in LAYERS, f"{module} is in no layer; add its folder to ARCHITECTURE.md"
    return LAYERS.index(parts[1])


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {
        name: {m for m in imports_of(path, name, known) if m != name} for name, path in mods.items()
    }


def test_every_module_belongs_to_a_layer_folder() -> None:
    loose = [m for m in modules() if m.count(".") == 1 and m.split(".")[1] not in LAYERS]
    assert [m for m in loose if m != "pipelines.__main__"] == []


def test_layers_only_import_downwards() -> None:
    upward = [
        f"{src} ({LAYERS[layer_of(src)]}) imports {dst}"
        for src, dsts in graph().items()
        if layer_of(src) < TOP
        for dst in sorted(dsts)
        if layer_of(dst) > layer_of(src)
    ]
    assert upward == []


def strongly_connected(g: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one module are cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(g):
        if root in index:
            continue
        work = [(root, iter(sorted(g.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(g.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles() -> None:
    assert strongly_connected(graph()) == []


def test_the_checks_catch_what_they_are_for() -> None:
    # the cycle finder and the layer rule on a made-up graph, so a broken checker cannot pass
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []
    assert layer_of("pipelines.core.errors") < layer_of("pipelines.run.runner")
    assert layer_of("pipelines") == TOP
