"""The package's import graph: stages import only earlier stages, and nothing imports in a circle.

Every module under graphdl/ is parsed with `ast`; every Import and ImportFrom counts,
including those inside functions (an import moved into a function still ties the two
modules together, it only hides the cycle from Python).
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

import graphdl

ROOT = Path(graphdl.__file__).parent
# the front end and the compiler: they must not reach up into the runtime or the interfaces
FRONT_END = ("parse", "elaborate", "ir", "passes", "ops", "lower")
LATER = ("graphdl.runtime", "graphdl.cli", "graphdl.api")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> nx.DiGraph:
    """module -> every graphdl module it imports (edge attribute `line` for messages)."""
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    g = nx.DiGraph()
    g.add_nodes_from(files)
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                # `from graphdl.elaborate import values` imports the module values
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]
            for t in targets:
                while t and t not in files:  # `import graphdl.ops.math.foo` -> the module
                    t = t.rpartition(".")[0]
                if t.startswith("graphdl") and t != name:
                    g.add_edge(name, t, line=node.lineno)
    return g


def in_stage(module: str, stages) -> bool:
    return any(module == f"graphdl.{s}" or module.startswith(f"graphdl.{s}.") for s in stages)


def describe_cycles(g: nx.DiGraph) -> list[str]:
    return [" -> ".join(c + [c[0]]) for c in nx.simple_cycles(g)][:10]


def test_the_package_has_no_import_cycle():
    g = import_graph()
    assert nx.is_directed_acyclic_graph(g), describe_cycles(g)


def test_the_front_end_does_not_import_the_runtime_or_the_interfaces():
    g = import_graph()
    bad = [f"{a} imports {b} (line {d['line']})" for a, b, d in g.edges(data=True)
           if in_stage(a, FRONT_END) and any(b == m or b.startswith(m + ".") for m in LATER)]
    assert not bad


def test_elaborate_has_no_imports_inside_functions():
    """Its modules are layered (see graphdl/elaborate/forms.py); an upward step goes
    through the forms table, never through an import hidden in a function."""
    hidden = []
    for path in sorted((ROOT / "elaborate").glob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and (node.level or (
                            node.module or "").startswith("graphdl")):
                        hidden.append(f"{path.name}:{node.lineno}")
                    elif isinstance(node, ast.Import) and any(
                            a.name.startswith("graphdl") for a in node.names):
                        hidden.append(f"{path.name}:{node.lineno}")
    assert not hidden


def test_the_graph_sees_imports_inside_functions():
    """The checks above are only as good as the graph: a local import is an edge."""
    g = import_graph()
    assert g.has_edge("graphdl.elaborate.check", "graphdl.elaborate.specials")
    assert g.has_edge("graphdl.api", "graphdl.elaborate.program")  # inside _checked_model
