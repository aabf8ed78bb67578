"""The import graph matches docs/ARCHITECTURE.md: no lower layer imports a higher one, no cycles between packages.

Every `import` / `from ... import` in study/ and paper_figures/ is read with ast, including the ones inside
functions (a function-level import is still a dependency; it only hides a cycle from Python's import machinery).
A module's unit is its package below study/ (study.train.loop -> study.train) or the top-level module itself
(study.config); units sit in the layers of LAYERS, lowest first. An import may point into the same layer or a
lower one. `if TYPE_CHECKING:` imports are annotations only and are skipped.

Cycles are found twice: between units (e.g. train <-> evaluate), and between modules inside one package (e.g.
train.checkpoint <-> train.sharded), ignoring a submodule's import of its own package's __init__ (the usual
re-export). KNOWN_CYCLES and KNOWN_UPWARD list the cycles and upward imports that exist today, owned by other
work; an entry whose import is gone fails test_known_*_still_exist, so the lists only shrink.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOTS = ("study", "paper_figures")

# Lowest first. A unit imports only units of its own layer or of layers listed before it. Keep in step with the
# layer table of docs/ARCHITECTURE.md (test_doc_lists_every_module checks that every module is listed there).
LAYERS: list[tuple[str, ...]] = [
    ("study", "study.errors", "study.fsutil", "study.timeutil", "study.presets", "study.prores", "study.lr_schedules",
     "study.paper_tasks", "study.labels", "study.extras", "study.coerce", "study.rawconfig"),
    ("study.config", "study.config_validate", "study.console"),
    ("study.model", "study.perplexity"),
    ("study.data", "study.results", "study.lease", "study.cost"),
    ("study.train",),
    ("study.evaluate", "study.export"),
    ("study.grid", "study.clusters", "study.status", "study.dispatch", "study.jobs"),
    ("study.collect", "study.analysis", "study.series", "study.stats", "study.notebooks", "study.design",
     "study.power", "study.preregister"),
    ("paper_figures",),
    ("study.commands", "study.cli", "study.__main__"),
]

# Import cycles that exist today, each with the modules that form it. Not owned by the layering work: listed so
# the test guards everything else; delete an entry once its cycle is gone (the test then keeps it gone).
KNOWN_CYCLES: list[frozenset[str]] = []

# Imports against the layering that exist today (importer, imported), same rules as KNOWN_CYCLES.
KNOWN_UPWARD: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    mods = {}
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module of ours a dotted import name lands in (study.grid.Cell -> study.grid), or None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def imports_in(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Modules of ours that the source of `module` imports (anywhere in its body), without itself."""
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    skip = _type_checking_blocks(tree)
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            # `from study import config` imports the module study.config; `from study.grid import Cell` study.grid
            names = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name)
            if target is not None and target != module:
                found.add(target)
    return found


GRAPH = {m: imports_in(p.read_text(encoding="utf-8"), m, is_package=p.name == "__init__.py")
         for m, p in MODULES.items()}


def unit(module: str) -> str:
    """study.train.loop -> study.train; study.config -> study.config; paper_figures.fig1 -> paper_figures."""
    parts = module.split(".")
    if parts[0] != "study":
        return parts[0]
    if len(parts) == 1:
        return "study"
    return ".".join(parts[:2])


LAYER_OF = {u: i for i, layer in enumerate(LAYERS) for u in layer}


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                scc = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    scc.add(w)
                    if w == node:
                        break
                if len(scc) > 1:
                    out.append(frozenset(scc))
    return out


def unit_cycles() -> list[frozenset[str]]:
    graph: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        graph.setdefault(unit(module), set()).update(unit(t) for t in targets if unit(t) != unit(module))
    return _cycles(graph)


def module_cycles() -> list[frozenset[str]]:
    """Cycles among the modules of one unit, leaving out imports of a module's own package __init__."""
    graph: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        graph[module] = {t for t in targets if unit(t) == unit(module) and not module.startswith(t + ".")}
    return _cycles(graph)


def violations() -> list[str]:
    out = []
    for module, targets in sorted(GRAPH.items()):
        mine = LAYER_OF[unit(module)]
        for target in sorted(targets):
            theirs = LAYER_OF[unit(target)]
            if theirs > mine and (module, target) not in KNOWN_UPWARD:
                out.append(f"{module} (layer {mine}: {unit(module)}) imports {target} "
                           f"(layer {theirs}: {unit(target)})")
    return out


# ---------------------------------------------------------------------------------------------------------------
def test_every_unit_has_a_layer():
    missing = sorted({unit(m) for m in MODULES} - set(LAYER_OF))
    assert not missing, f"add these to LAYERS (and to docs/ARCHITECTURE.md): {missing}"


def test_no_lower_layer_imports_a_higher_one():
    assert not violations(), "imports against the layering of docs/ARCHITECTURE.md:\n" + "\n".join(violations())


def test_no_unknown_import_cycles():
    found = unit_cycles() + module_cycles()
    unknown = [sorted(c) for c in found if c not in KNOWN_CYCLES]
    assert not unknown, f"import cycles (function-level imports included): {unknown}"


def test_known_cycles_still_exist():
    """An entry of KNOWN_CYCLES whose cycle is gone must be deleted, so the allow-list only ever shrinks."""
    found = set(unit_cycles() + module_cycles())
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in found]
    assert not gone, f"these cycles are gone: delete them from KNOWN_CYCLES: {gone}"


def test_known_upward_imports_still_exist():
    gone = sorted(pair for pair in KNOWN_UPWARD if pair[1] not in GRAPH.get(pair[0], ()))
    assert not gone, f"these imports are gone: delete them from KNOWN_UPWARD: {gone}"


def test_doc_lists_every_module():
    doc = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    missing = []
    for path in MODULES.values():
        rel = path.relative_to(REPO).as_posix()
        if path.name == "__init__.py" and path.parent.name != "study":
            rel = rel[: -len("__init__.py")]  # a package is listed by its folder
        if f"`{rel}`" not in doc:
            missing.append(rel)
    assert not missing, f"docs/ARCHITECTURE.md does not list: {missing}"


# The checks must be able to fail: a planted upward import and a planted cycle are found.
def test_checks_catch_a_planted_violation_and_cycle(monkeypatch):
    monkeypatch.setitem(GRAPH, "study.config", GRAPH["study.config"] | {"study.collect"})
    assert any(v.startswith("study.config (layer 1") and "study.collect" in v for v in violations())
    cycles = unit_cycles()
    assert any({"study.config", "study.collect"} <= c for c in cycles)


def test_import_reading_sees_function_level_and_relative_imports():
    source = """
from typing import TYPE_CHECKING
import numpy
from . import keys
from ..results import RunDir
if TYPE_CHECKING:
    from study.collect import Collection
def later():
    from study.train import loop
    import study.cost
"""
    found = imports_in(source, "study.grid.parse")
    assert found == {"study.grid.keys", "study.results", "study.train.loop", "study.cost"}
