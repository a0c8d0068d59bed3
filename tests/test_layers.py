"""DESIGN.md's dependency direction, checked on the imports themselves (any import, anywhere in a
module, deferred ones included): ``jobs -> analytics -> pipeline -> ghostnet``, ``jobs -> demo ->
ghostnet``; ``ghostnet`` imports neither Ray nor our other packages."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"ghostnet", "pipeline", "analytics", "demo", "jobs"}
ALLOWED = {
    "ghostnet": {"ghostnet"},
    "pipeline": {"pipeline", "ghostnet"},
    "analytics": {"analytics", "pipeline", "ghostnet"},
    "demo": {"demo", "ghostnet"},
    "jobs": OURS,
}
FORBIDDEN_THIRD_PARTY = {"ghostnet": {"ray", "deltalake", "duckdb"}}


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_what_it_may(package):
    modules = sorted((ROOT / package).rglob("*.py"))
    if package != "demo":
        assert modules, f"{package}/ has no modules"
    wrong = {}
    for module in modules:
        imported = imported_packages(module)
        bad = (imported & OURS) - ALLOWED[package] | imported & FORBIDDEN_THIRD_PARTY.get(package, set())
        if bad:
            wrong[str(module.relative_to(ROOT))] = sorted(bad)
    assert not wrong, f"imports against DESIGN.md's dependency direction: {wrong}"


@pytest.mark.subprocess
def test_the_pipeline_names_its_public_surface_and_loads_it_lazily():
    """#17 "pipeline/__init__.py names the public surface (__all__)": every name resolves, none
    shadows a submodule, and importing the package alone starts neither Ray nor torch."""
    import subprocess
    import sys

    probe = ("import sys, pipeline; assert 'ray' not in sys.modules and 'torch' not in sys.modules; "
             "import pkgutil; subs = {m.name for m in pkgutil.iter_modules(pipeline.__path__)}; "
             "assert not subs & set(pipeline.__all__), subs & set(pipeline.__all__); "
             "[getattr(pipeline, name) for name in pipeline.__all__]")
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=ROOT, timeout=300)
