"""The import graph of ``ptdlib``: no cycles between modules, and the packages stay layered.

The graph is read from the source with ``ast`` (nothing is imported): every ``import`` and ``from ... import``
at any depth counts, function-local ones included, since a local import is how a cycle hides. ``from
ptdlib.x import y`` is an edge to module ``ptdlib.x.y`` when ``y`` is a module, else to ``ptdlib.x``.
Importing a submodule also runs its package's ``__init__``; that implicit edge is not counted (a package
may import its own submodules), but an explicit ``from ptdlib.pkg import name`` inside ``ptdlib.pkg`` is.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "ptdlib"

#: package -> packages it must never import, directly or through a function-local import. The libraries'
#: core (sampling, cost, models, canvas, predictor, stats, tasks) does not depend on the layers that run
#: experiments, analyse their results, render the report or parse the command line.
UPPER = ("ptdlib.experiment", "ptdlib.analysis", "ptdlib.report", "ptdlib.cli")
FORBIDDEN = {
    "ptdlib.sampling": UPPER,
    "ptdlib.cost": UPPER,
    "ptdlib.models": UPPER,
    "ptdlib.canvas": UPPER,
    "ptdlib.predictor": UPPER,
    "ptdlib.stats": UPPER,
    "ptdlib.tasks": UPPER,
    "ptdlib.experiment": ("ptdlib.analysis", "ptdlib.report", "ptdlib.cli"),
    "ptdlib.analysis": ("ptdlib.report", "ptdlib.cli"),
}


# ---------------------------------------------------------------- the graph
def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under package directory ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from`` import names (relative imports resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _owner(name: str, modules) -> str | None:
    """The longest prefix of ``name`` that is a known module (``ptdlib.a.b.func`` -> ``ptdlib.a.b``)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in modules:
            return candidate
    return None


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same top-level package it imports (see the module docstring)."""
    files = module_files(root)
    graph = {}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(_owner(alias.name, files) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_package, node)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in files else _owner(base, files))
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle ``[a, b, ..., a]`` per strongly connected component of more than one module (Tarjan 1972)."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def visit(v):  # recursive: the graph is a few hundred modules deep at most
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(sorted(c)[0], c, graph) for c in components]


def _cycle_in(start: str, component: set[str], graph) -> list[str]:
    """A shortest path from ``start`` back to itself inside ``component`` (breadth first)."""
    parents, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while parents[path[-1]] is not None:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in its component")  # unreachable for a real component


def _describe(cycles) -> str:
    return "\n".join("  " + " -> ".join(c) for c in cycles)


# ---------------------------------------------------------------- the library
def test_ptdlib_has_no_import_cycle():
    cycles = find_cycles(import_graph(ROOT))
    assert not cycles, f"import cycles between ptdlib modules:\n{_describe(cycles)}"


def test_core_packages_do_not_import_the_layers_above_them():
    graph = import_graph(ROOT)
    bad = sorted(
        f"{m} imports {t}"
        for m, targets in graph.items()
        for t in targets
        for pkg, above in FORBIDDEN.items()
        if (m == pkg or m.startswith(pkg + ".")) and any(t == a or t.startswith(a + ".") for a in above)
    )
    assert not bad, "layering broken:\n  " + "\n  ".join(bad)


def test_the_graph_sees_the_imports_it_must():
    graph = import_graph(ROOT)
    assert "ptdlib.predictor.conformal" in graph["ptdlib.predictor.online"]
    assert "ptdlib.predictor.conformal" in graph["ptdlib.predictor.calibration"]
    assert "ptdlib.predictor.calibration" not in graph["ptdlib.predictor.online"]
    assert "ptdlib.predictor.calibration" in graph["ptdlib.predictor"]  # a package's own __init__ imports


# ---------------------------------------------------------------- the checker on packages built to fail
def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_a_cycle_through_a_function_local_import_is_found(tmp_path):
    root = _package(
        tmp_path,
        {
            "a.py": "from pkg.b import helper\n",
            "b.py": "def helper():\n    from pkg import a\n    return a\n",
            "c.py": "import pkg.a\n",
        },
    )
    assert find_cycles(import_graph(root)) == [["pkg.a", "pkg.b", "pkg.a"]]


@pytest.mark.parametrize(
    "files, expected",
    [
        (
            {
                "x/__init__.py": "",
                "x/m.py": "from ..y import n\n",
                "y/__init__.py": "",
                "y/n.py": "from pkg.x import m\n",
            },
            ["pkg.x.m", "pkg.y.n", "pkg.x.m"],
        ),  # relative and absolute "from package import module"
        (
            {"p.py": "import pkg.q\n", "q.py": "import pkg.r as r\n", "r.py": "from pkg.p import CONSTANT\n"},
            ["pkg.p", "pkg.q", "pkg.r", "pkg.p"],
        ),  # a name from a module is an edge to that module
        (
            {"s/__init__.py": "from pkg.s.t import f\n", "s/t.py": "from pkg.s import g\n"},
            ["pkg.s", "pkg.s.t", "pkg.s"],
        ),  # a submodule importing its own half-initialised package
    ],
)
def test_cycles_are_found_whatever_the_import_form(tmp_path, files, expected):
    assert find_cycles(import_graph(_package(tmp_path, files))) == [expected]


def test_an_acyclic_package_passes(tmp_path):
    root = _package(tmp_path, {"a.py": "import pkg.b\nimport numpy\n", "b.py": "from . import c\n", "c.py": ""})
    graph = import_graph(root)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.c"}
    assert find_cycles(graph) == []
