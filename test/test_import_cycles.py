"""No import cycles between the subpackages of flowclas_ros (static scan of the source, no imports).

Counted: imports that run when a module is imported (module level, class bodies, module-level
``if``/``try``). Not counted: imports inside functions (deferred on purpose, e.g.
``evaluation/cli`` handing ``--live`` to ``ros/live_cli``) and ``if TYPE_CHECKING:`` blocks.
A top-level module (``config_io.py``) is a node of its own, like a subpackage.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "flowclas_ros"

Edges = dict[str, dict[str, list[str]]]  # importer node -> imported node -> "module.py:line" evidence


def _eager_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements executed at import time (not in functions, not under TYPE_CHECKING)."""
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def _targets(node: ast.Import | ast.ImportFrom, module: list[str], is_pkg: bool) -> Iterator[list[str]]:
    """Absolute dotted names (as part lists) an import statement refers to."""
    if isinstance(node, ast.Import):
        yield from (alias.name.split(".") for alias in node.names)
        return
    if node.level:  # relative: from the module's package, one level up per extra dot
        base = module if is_pkg else module[:-1]
        base = base[: len(base) - (node.level - 1)]
    else:
        base = []
    parts = base + (node.module.split(".") if node.module else [])
    yield parts
    yield from (parts + [alias.name] for alias in node.names)


def import_graph(package: Path) -> Edges:
    """Import-time edges between the top-level parts of ``package``."""
    name = package.name
    edges: Edges = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).with_suffix("").parts
        is_pkg = rel[-1] == "__init__"
        rel = rel[:-1] if is_pkg else rel
        if not rel:
            continue  # the package's own __init__ is not a part
        module = [name, *rel]
        for node in _eager_imports(ast.parse(path.read_text(), str(path))):
            parts = {t[1] for t in _targets(node, module, is_pkg) if len(t) > 1 and t[0] == name}
            for part in sorted(parts - {rel[0]}):
                if (package / part).is_dir() or (package / f"{part}.py").is_file():
                    where = f"{path.relative_to(package)}:{node.lineno}"
                    edges.setdefault(rel[0], {}).setdefault(part, []).append(where)
    return edges


def find_cycles(edges: Edges) -> list[list[str]]:
    """Strongly connected groups of two or more parts (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(cycles)


def describe(cycle: list[str], edges: Edges) -> str:
    """One line per edge inside the cycle, with where the import is."""
    return "; ".join(
        f"{a} -> {b} ({', '.join(edges[a][b][:3])})" for a in cycle for b in cycle if b in edges.get(a, {})
    )


def test_no_import_cycle_between_subpackages():
    edges = import_graph(PACKAGE)
    assert "data" in edges and "ros" in edges, "the scan found no imports: wrong package path?"
    cycles = find_cycles(edges)
    assert not cycles, "import cycles between subpackages: " + " | ".join(describe(c, edges) for c in cycles)


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_checker_finds_a_planted_cycle(tmp_path):
    pkg = _write(
        tmp_path,
        {
            "__init__.py": "",
            "a/__init__.py": "",
            "a/x.py": "from pkg.b.y import f\n",
            "b/__init__.py": "",
            "b/y.py": "try:\n    from ..c import g\nexcept ImportError:\n    pass\n",
            "c.py": "import pkg.a.x\n",
            "d/__init__.py": "from . import e\nfrom pkg import c\n",
            "d/e.py": "",
        },
    )
    edges = import_graph(pkg)
    assert find_cycles(edges) == [["a", "b", "c"]]
    assert edges["b"]["c"] == ["b/y.py:2"]  # a relative import inside try counts
    assert "d" not in find_cycles(edges)[0] and edges["d"] == {"c": ["d/__init__.py:2"]}
    assert "c -> a (c.py:1)" in describe(["a", "b", "c"], edges)


def test_checker_ignores_deferred_and_type_checking_imports(tmp_path):
    pkg = _write(
        tmp_path,
        {
            "a.py": "import pkg.b\n",
            "b/__init__.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from pkg import a\n"
                "def run():\n    from pkg.a import x\n"
                "class K:\n    f = lambda: __import__('pkg.a')\n"
            ),
        },
    )
    edges = import_graph(pkg)
    assert edges == {"a": {"b": ["a.py:1"]}} and find_cycles(edges) == []
    (pkg / "b" / "__init__.py").write_text("class K:\n    from pkg.a import x\n")  # a class body runs
    assert find_cycles(import_graph(pkg)) == [["a", "b"]]


# --- issue 26: the module graph (every import, deferred ones too), the ROS boundary, module size ---

MAX_MODULE_LINES = 400
GENERATED = ("msg", "srv", "action")
"""Interfaces generated into the colcon install (not in the source tree); part of the ROS adapter."""
ROS_ADAPTER = ("flowclas_ros.ros", *(f"flowclas_ros.{kind}" for kind in GENERATED))
ROS_IMPORTERS_ALLOWED = {
    ("flowclas_ros.evaluation.cli", "flowclas_ros.ros"),
    ("flowclas_ros.evaluation.cli", "flowclas_ros.ros.live_cli"),
}
"""The one arrow up into ros/: ``flowclas-eval --live`` hands over to the live replay, inside a function."""


def _modules(package: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("").parts
        is_pkg = rel[-1] == "__init__"
        found[".".join(rel[:-1] if is_pkg else rel)] = (path, is_pkg)
    return found


def _all_imports(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement but those under ``if TYPE_CHECKING:``, with whether it is deferred."""
    stack: list[tuple[ast.AST, bool]] = [(node, False) for node in tree.body]
    while stack:
        node, deferred = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, deferred
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend((child, deferred) for child in node.orelse)
        else:
            inner = deferred or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            stack.extend((child, inner) for child in ast.iter_child_nodes(node))


def module_graph(package: Path) -> tuple[Edges, dict[tuple[str, str], bool]]:
    """Edges between modules (an import of ``a.b.c`` points at the longest module prefix that exists).

    Returns the edges with their evidence, and for each edge whether every import behind it is deferred.
    """
    modules = _modules(package)
    edges: Edges = {}
    deferred: dict[tuple[str, str], bool] = {}
    for name, (path, is_pkg) in modules.items():
        for node, lazy in _all_imports(ast.parse(path.read_text(), str(path))):
            for parts in _targets(node, name.split("."), is_pkg):
                if len(parts) > 1 and parts[1] in GENERATED and ".".join(parts[:2]) not in modules:
                    target = ".".join(parts[:2])  # a generated interface package
                else:
                    prefixes = (".".join(parts[:k]) for k in range(len(parts), 0, -1))
                    target = next((p for p in prefixes if p in modules), None)
                if target is None or target == name or name.startswith(target + "."):
                    continue  # outside the package, itself, or its own parent package
                edges.setdefault(name, {}).setdefault(target, []).append(f"{path.name}:{node.lineno}")
                deferred[(name, target)] = deferred.get((name, target), True) and lazy
    return edges, deferred


def test_no_import_cycle_between_modules_counting_deferred_imports():
    edges, _ = module_graph(PACKAGE)
    cycles = find_cycles(edges)
    assert not cycles, "import cycles between modules: " + " | ".join(describe(c, edges) for c in cycles)


def test_only_ros_and_demo_import_the_ros_adapter():
    edges, deferred = module_graph(PACKAGE)
    inside = ("flowclas_ros.ros", "flowclas_ros.demo")
    crossing = {
        (a, b): where
        for a, targets in edges.items()
        if not a.startswith(inside)
        for b, where in targets.items()
        if b.startswith(ROS_ADAPTER)
    }
    assert set(crossing) <= ROS_IMPORTERS_ALLOWED, f"imports of ros/ from the core: {crossing}"
    for edge in crossing:
        assert deferred[edge], f"{edge} must stay inside a function (--live only): {crossing[edge]}"


def test_no_module_is_longer_than_the_limit():
    long = {
        str(path.relative_to(PACKAGE)): n
        for path, _ in _modules(PACKAGE).values()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by what they do): {long}"


def test_module_checker_counts_deferred_imports_and_the_generated_messages(tmp_path):
    pkg = _write(
        tmp_path,
        {
            "__init__.py": "",
            "ros/__init__.py": "",
            "ros/node.py": "from pkg.core import run\n",
            "core.py": "def run():\n    from pkg.ros import node\n    from pkg.msg import Result\n",
        },
    )
    edges, deferred = module_graph(pkg)
    assert find_cycles(edges) == [["pkg.core", "pkg.ros.node"]]
    assert deferred[("pkg.core", "pkg.ros.node")] and not deferred[("pkg.ros.node", "pkg.core")]
    assert set(edges["pkg.core"]["pkg.msg"]) == {"core.py:3"} and deferred[("pkg.core", "pkg.msg")]
