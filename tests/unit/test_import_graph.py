"""The import graph of src/qwick: no cycles between modules or packages, and model/ stays a leaf of the engine.

Every import counts, those under `if TYPE_CHECKING:` and inside functions included: a lazy or type-only import
back up the layers is still a design cycle (it only hides from the interpreter). Read from the source with `ast`,
so nothing is imported and the test takes a second.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).parents[2] / "src"
# model/ is the network and its attention backends: what runs it, serves it or adapts it sits above it
MODEL_MUST_NOT_IMPORT = ("engine", "server", "gates", "lora", "train", "quant", "passes", "llm")
MAX_SOURCE_LINES = 400  # a file past this is doing more than one job (C++ sources included)


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the qwick package (packages by their __init__)."""
    modules = {}
    for path in (SRC / "qwick").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def face_names() -> dict[str, str]:
    """What the package face (qwick/__init__.py) re-exports: name -> the module that defines it."""
    names = {}
    for node in ast.walk(ast.parse((SRC / "qwick" / "__init__.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qwick."):
            names.update({alias.name: node.module for alias in node.names})
    return names


def imported_names(module: str, path: Path, face: dict[str, str]) -> Iterator[str]:
    """Every dotted name `module` imports (absolute, relative resolved), wherever the import statement stands;
    `from qwick import LLM` counts as importing qwick.llm (`face`: what the face hands on, face_names)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base == "qwick":
                yield from (face.get(alias.name, "qwick") for alias in node.names)
                continue
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    """module -> the qwick modules it imports (a name resolved to the longest module it names)."""
    modules, face = module_files(), face_names()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in imported_names(module, path, face):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def package_of(module: str) -> str:
    """qwick.engine.runner -> qwick.engine; top-level modules (qwick.llm) are their own package."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        source = package_of(module)
        for target in targets:
            # `import qwick` (the face, e.g. for __version__) is not a layer edge; its names resolve (face_names)
            if target != "qwick" and package_of(target) != source:
                packages.setdefault(source, set()).add(package_of(target))
    return packages


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    # the checker itself: a loop of three and a self-standing pair, beside a tree
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert sorted(cycles(graph)) == [["a", "b", "c"], ["d", "e"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_imports_inside_functions() -> None:
    graph = import_graph()
    assert len(graph) > 50  # the walk found the package
    assert "qwick.server.cli" in graph["qwick.cli"]  # imported inside a function, so the CLI starts fast
    assert "qwick.llm" in graph["qwick.train.distill"]  # `from qwick import LLM`, through the face


def test_no_module_cycles() -> None:
    assert cycles(import_graph()) == []


def test_no_package_cycles() -> None:
    assert cycles(package_graph(import_graph())) == []


@pytest.mark.parametrize("forbidden", MODEL_MUST_NOT_IMPORT)
def test_model_imports_nothing_above_it(forbidden: str) -> None:
    graph = import_graph()
    offenders = sorted(f"{m} -> {t}" for m, targets in graph.items() if m.startswith("qwick.model")
                       for t in targets if package_of(t) == f"qwick.{forbidden}")
    assert offenders == []


def test_no_source_file_over_the_line_limit() -> None:
    sources = [p for p in (SRC / "qwick").rglob("*") if p.suffix in (".py", ".cpp", ".h", ".cu")]
    long = sorted(f"{p.relative_to(SRC)}: {len(p.read_text().splitlines())}" for p in sources
                  if len(p.read_text().splitlines()) > MAX_SOURCE_LINES)
    assert long == []
