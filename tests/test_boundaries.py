"""Dependencies point one way: nothing under lit/ imports the launcher or submitit; only one launcher module imports submitit."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO


def imported_modules(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` of the file names, at any depth (lazy imports too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def top(name: str) -> str:
    return name.split(".")[0]


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


def test_the_walk_sees_lazy_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from launcher import runs\n    import submitit.helpers\n")
    assert imported_modules(probe) == {"launcher", "submitit.helpers"}


def test_lit_packages_do_not_import_each_others_internals_in_a_cycle() -> None:
    """lit.train may use lit.eval (periodic evaluation); lit.eval and lit.data never import lit.train."""
    for package in ("eval", "data"):
        for path in (REPO / "lit" / package).rglob("*.py"):
            assert not [m for m in imported_modules(path) if m.startswith("lit.train")], path
