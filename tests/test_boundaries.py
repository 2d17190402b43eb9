"""Dependencies point down: the layer order of `lit/` and `launcher/`, no import cycle, submitit behind one adapter.

Every `import` and `from ... import` counts, at any depth: a function-level (lazy) import is an arrow
like any other. A module may import modules of its own layer or of a lower one, never of a higher one,
and no chain of imports may come back to where it started.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

from tests.conftest import REPO

Layers = tuple[tuple[str, frozenset[str]], ...]

LAUNCHER_LAYERS: Layers = (  # top → bottom; a module belongs to the layer that names it or its longest package prefix
    ("command line", frozenset({"launcher.__main__", "launcher.cli_status", "launcher.cli_sweep", "launcher.demo",
                                "launcher.ablation"})),
    ("reading run folders", frozenset({"launcher.status"})),
    ("deciding and submitting", frozenset({"launcher.sweep", "launcher.pipeline", "launcher.local", "launcher.submit"})),
    ("running on the node", frozenset({"launcher.task", "launcher.stage_task", "launcher.retry", "launcher.boot"})),
    ("a sweep's report (its last member writes it on its node)", frozenset({"launcher.report", "launcher.compare",
                                                                               "launcher.stats"})),
    ("run folders and cluster kinds", frozenset({"launcher.rundir", "launcher.sweepdir", "launcher.clusters",
                                                 "launcher.preflight"})),
    ("job spec and the submitit adapter", frozenset({"launcher.spec", "launcher.sweep_spec", "launcher.submitit_api",
                                                     "launcher"})),
)

LIT_LAYERS: Layers = (  # top → bottom
    ("command line, the package's API (lit.Classifier)", frozenset({"lit", "lit.__main__", "lit.cli", "lit.configdoc",
                                                                   "lit.models.cli", "lit.prior.cli"})),
    ("field use, stages, doctor", frozenset({"lit.field", "lit.stages", "lit.doctor"})),
    ("training", frozenset({"lit.train"})),
    ("evaluation", frozenset({"lit.eval"})),
    ("checkpoints, model preparation, the location prior", frozenset({"lit.checkpoint", "lit.models", "lit.prior"})),
    ("data, model", frozenset({"lit.data", "lit.model"})),
    ("base", frozenset({"lit.config", "lit.config_cluster", "lit.configlib", "lit.errors", "lit.io", "lit.log", "lit.dist", "lit.signals",
                        "lit.plots", "lit.runlog", "lit.checklist", "lit.cliargs"})),
)

KNOWN_LIT_CYCLES: frozenset[tuple[str, str]] = frozenset()
"""Arrows (importer, imported) of lit/ let through while a knot is being undone; each needs its reason in a comment.

Empty since issue 25's field package (lit.field above lit.eval) and the small circles' fixes (doctor and
lit.models.verify, lit.data.toy and toy_hard, lit.models' prepare, checks, fetch and timm_tower). An entry
whose import no longer exists fails test_the_allow_list_holds_only_arrows_that_exist.
"""


# ---------------------------------------------------------------- the walk


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path = REPO) -> set[str]:
    """Every module an `import` or `from ... import` of the file names, at any depth (lazy imports too).

    `from pkg import name` gives `pkg.name`: the module `pkg.name` when there is one, else (a name that
    `pkg` defines) `pkg` itself once resolved against the modules that exist (`graph`).
    """
    names: set[str] = set()
    own = module_name(path, root)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def top(name: str) -> str:
    return name.split(".")[0]


def graph(package: str) -> dict[str, set[str]]:
    """Module → the modules of `package` it imports (itself left out)."""
    files = {module_name(p): p for p in sorted((REPO / package).rglob("*.py"))}
    arrows: dict[str, set[str]] = {}
    for name, path in files.items():
        found = set()
        for imported in imported_modules(path):
            while imported and imported not in files:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                found.add(imported)
        arrows[name] = found
    return arrows


def layer_of(module: str, layers: Layers) -> int:
    """The layer's index counted from the bottom (its own name, else its longest package prefix below the top one); -1: none."""
    parts = module.split(".")
    for n in range(len(parts), 0 if len(parts) == 1 else 1, -1):
        prefix = ".".join(parts[:n])
        for i, (_, names) in enumerate(layers):
            if prefix in names:
                return len(layers) - 1 - i
    return -1


def upward(arrows: dict[str, set[str]], layers: Layers) -> list[str]:
    return sorted(f"{a} ({layers[len(layers) - 1 - layer_of(a, layers)][0]}) → {b} ({layers[len(layers) - 1 - layer_of(b, layers)][0]})"
                  for a, targets in arrows.items() for b in targets if layer_of(b, layers) > layer_of(a, layers))


def cycles(arrows: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a → b → ... → a) per strongly connected group of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(arrows.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(arrows):
        if v not in index:
            visit(v)
    return [_path_through(sorted(g)[0], g, arrows) for g in groups]


def _path_through(start: str, group: set[str], arrows: dict[str, set[str]]) -> list[str]:
    """A shortest way from `start` back to itself inside `group`."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(arrows[v] & group):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return [start]


def without(arrows: dict[str, set[str]], allowed: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    skip = set(allowed)
    return {a: {b for b in targets if (a, b) not in skip} for a, targets in arrows.items()}


# ---------------------------------------------------------------- the rules


@pytest.mark.parametrize("package, layers, allowed", [
    ("launcher", LAUNCHER_LAYERS, frozenset()),
    ("lit", LIT_LAYERS, KNOWN_LIT_CYCLES),
], ids=["launcher", "lit"])
def test_every_module_has_a_layer_and_every_arrow_points_down(package: str, layers: Layers,
                                                              allowed: frozenset[tuple[str, str]]) -> None:
    arrows = graph(package)
    assert len(arrows) > 15  # the walk found the package
    assert sorted(m for m in arrows if layer_of(m, layers) < 0) == [], f"modules without a layer in {package}'s order"
    assert upward(without(arrows, allowed), layers) == [], "imports from a lower layer to a higher one"


@pytest.mark.parametrize("package, allowed", [("launcher", frozenset()), ("lit", KNOWN_LIT_CYCLES)], ids=["launcher", "lit"])
def test_no_import_cycle(package: str, allowed: frozenset[tuple[str, str]]) -> None:
    found = cycles(without(graph(package), allowed))
    assert [" → ".join(c) for c in found] == [], "import cycles"


def test_the_allow_list_holds_only_arrows_that_exist() -> None:
    arrows = graph("lit")
    assert sorted(f"{a} → {b}" for a, b in KNOWN_LIT_CYCLES if b not in arrows.get(a, ())) == [], \
        "fixed: remove these from KNOWN_LIT_CYCLES"


def test_the_rules_catch_an_upward_arrow_and_a_cycle() -> None:
    layers: Layers = (("top", frozenset({"p.high"})), ("bottom", frozenset({"p.low", "p.other"})))
    arrows = {"p.high": {"p.low"}, "p.low": {"p.high", "p.other"}, "p.other": {"p.low"}}
    assert upward(arrows, layers) == ["p.low (bottom) → p.high (top)"]
    assert cycles(arrows) == [["p.high", "p.low", "p.high"]]
    assert cycles(without(arrows, {("p.low", "p.high"), ("p.other", "p.low")})) == []


def test_the_walk_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    probe = tmp_path / "pkg" / "sub" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("def f():\n    from launcher import runs\n    import submitit.helpers\n    from ..other import x\n")
    assert imported_modules(probe, tmp_path) == {"launcher.runs", "submitit.helpers", "pkg.other.x"}


def test_lit_never_imports_the_launcher_or_submitit() -> None:
    files = sorted((REPO / "lit").rglob("*.py"))
    assert len(files) > 30  # the walk found the library
    wrong = {str(p.relative_to(REPO)): sorted(m for m in imported_modules(p) if top(m) in ("launcher", "submitit"))
             for p in files}
    assert {k: v for k, v in wrong.items() if v} == {}


def test_submitit_is_reached_through_one_adapter() -> None:
    users = sorted(str(p.relative_to(REPO)) for p in (REPO / "launcher").rglob("*.py")
                   if any(top(m) == "submitit" for m in imported_modules(p)))
    assert users == ["launcher/submitit_api.py"]


def test_the_cluster_kinds_are_told_apart_in_one_module() -> None:
    """`cfg.cluster == "slurm"` and the like: only launcher/clusters.py compares a cluster with a kind's name."""
    found = []
    for path in sorted((REPO / "launcher").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(isinstance(c, ast.Constant) and c.value in ("slurm", "local", "debug")
                                                     for c in [node.left, *node.comparators]):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert found == []
