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
