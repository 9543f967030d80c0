"""The package's import graph has no cycle.

The graph is built from the source with ``ast``: every ``import`` statement counts, at module level and inside
functions (a lazy import still makes two modules depend on each other). Rules:

- ``import unlearn_trainer.a.b`` is an edge to ``unlearn_trainer.a.b``.
- Imports under ``if TYPE_CHECKING:`` count: the lazy package ``__init__`` (PEP 562 ``__getattr__`` over a name ->
  submodule mapping) lists its public names there, so its edges stay in the graph (``tests/test_lazy_import.py``
  checks that block against the mapping).
- ``from pkg import name`` is an edge to ``pkg.name`` when that is a module of the package, else to ``pkg`` (its
  ``__init__``); relative imports are resolved against the importing module.
- Loading a submodule runs its parent packages' ``__init__`` first, but that implicit step is NOT an edge: a package
  ``__init__`` that re-exports its own submodules is the normal layout, not a cycle. An explicit import of a parent
  package from inside it (``from . import name`` where ``name`` is not a submodule) IS an edge to the ``__init__``, so a
  submodule importing its parent package that re-imports the submodule is reported as the cycle it is.

A second test collapses every module to its top-level component (``data``, ``evaluation``, ``hub``, ``trainers``,
...) and asserts that graph is acyclic too, so that two subpackages never depend on each other through different
modules (e.g. ``data.benchmarks -> evaluation.metrics`` while ``evaluation.evaluator -> data.collator``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import unlearn_trainer

ROOT = Path(unlearn_trainer.__file__).resolve().parent
PACKAGE = "unlearn_trainer"


def _modules(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name; a package's ``__init__.py`` is named after the package."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join([package, *parts])] = path
    return modules


def _import_edges(name: str, path: Path, modules: dict[str, Path], package: str = PACKAGE) -> set[str]:
    """The package modules that ``name`` (source at ``path``) imports anywhere in its body."""
    is_package = path.name == "__init__.py"
    edges = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == package or alias.name.startswith(package + "."):
                    edges.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # Relative to the importing module's package (a package's own __init__ is its own package).
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if not (source == package or source.startswith(package + ".")):
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                edges.add(submodule if submodule in modules else source)
    edges.discard(name)
    return {edge for edge in edges if edge in modules}


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    modules = _modules(root, package)
    return {name: _import_edges(name, path, modules, package) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None when the graph is acyclic (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append(iter(sorted(graph.get(child, ()))))
    return None


def _component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def component_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Modules collapsed to their top-level component; the root ``__init__`` (the public API) is its own node."""
    collapsed: dict[str, set[str]] = {}
    for module, targets in graph.items():
        edges = collapsed.setdefault(_component(module), set())
        edges.update(_component(target) for target in targets)
    for component, edges in collapsed.items():
        edges.discard(component)
    return collapsed


def _describe(cycle: list[str]) -> str:
    return "import cycle: " + " -> ".join(cycle)


def test_module_import_graph_is_acyclic():
    graph = import_graph()
    assert f"{PACKAGE}.trainers.base" in graph and f"{PACKAGE}.hub" in graph  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, _describe(cycle)


def test_subpackage_import_graph_is_acyclic():
    graph = component_graph(import_graph())
    cycle = find_cycle(graph)
    assert cycle is None, _describe(cycle)


# The checker itself, on small synthetic packages: it must see lazy and relative imports, must not call a package
# __init__ re-exporting its submodules a cycle, and must call a submodule importing its re-exporting parent one.

def _write(root: Path, files: dict[str, str]) -> Path:
    for relative, source in files.items():
        path = root / "pkg" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root / "pkg"


def test_checker_sees_lazy_and_relative_imports(tmp_path):
    root = _write(tmp_path, {
        "__init__.py": "",
        "a.py": "from .sub import b\n",
        "sub/__init__.py": "",
        "sub/b.py": "def f():\n    from ..a import something\n",
    })
    graph = import_graph(root, "pkg")
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.a"}
    assert find_cycle(graph) in (["pkg.a", "pkg.sub.b", "pkg.a"], ["pkg.sub.b", "pkg.a", "pkg.sub.b"])


def test_package_init_reexporting_its_submodules_is_not_a_cycle(tmp_path):
    root = _write(tmp_path, {
        "__init__.py": "from .sub import thing\n",
        "sub/__init__.py": "from .b import thing\n",
        "sub/b.py": "import json\nthing = 1\n",
    })
    graph = import_graph(root, "pkg")
    assert graph["pkg.sub"] == {"pkg.sub.b"}
    assert find_cycle(graph) is None


def test_lazy_init_keeps_its_type_checking_edges(tmp_path):
    root = _write(tmp_path, {
        "__init__.py": "from typing import TYPE_CHECKING\n_LAZY = {'thing': 'b'}\n"
                       "if TYPE_CHECKING:\n    from .b import thing\n",
        "b.py": "def f():\n    from . import thing\nthing = 1\n",
    })
    graph = import_graph(root, "pkg")
    assert graph["pkg"] == {"pkg.b"}
    assert find_cycle(graph) == ["pkg", "pkg.b", "pkg"]


def test_submodule_importing_its_reexporting_parent_is_a_cycle(tmp_path):
    root = _write(tmp_path, {
        "__init__.py": "__version__ = '1'\nfrom .b import thing\n",
        "b.py": "def f():\n    from . import __version__\nthing = 1\n",
    })
    graph = import_graph(root, "pkg")
    assert graph["pkg.b"] == {"pkg"}
    assert find_cycle(graph) == ["pkg", "pkg.b", "pkg"]


def test_subpackages_depending_on_each_other_through_different_modules_is_a_cycle(tmp_path):
    root = _write(tmp_path, {
        "__init__.py": "",
        "data/__init__.py": "",
        "data/loaders.py": "from ..evaluation.metrics import score\n",
        "data/collator.py": "",
        "evaluation/__init__.py": "",
        "evaluation/metrics.py": "score = 1\n",
        "evaluation/evaluator.py": "from ..data.collator import x\n",
    })
    graph = import_graph(root, "pkg")
    assert find_cycle(graph) is None
    assert find_cycle(component_graph(graph)) in (["data", "evaluation", "data"], ["evaluation", "data", "evaluation"])
