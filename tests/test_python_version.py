"""The Python the project says it needs is the Python its code needs: pyproject's requires-python,
ruff's target, the README and the container image name one minimum, and the code parses and
imports on it."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ghostnet", "pipeline", "jobs")
# Standard-library modules added after 3.10 ("What's New in Python" 3.11 to 3.14).
ADDED_IN = {"tomllib": (3, 11), "annotationlib": (3, 14), "compression": (3, 14)}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def minimum() -> tuple[int, int]:
    spec = pyproject()["project"]["requires-python"]
    match = re.fullmatch(r">=\s*3\.(\d+)", spec)
    assert match, f"requires-python {spec!r} is not of the form '>=3.N'"
    return 3, int(match[1])


def imported_modules(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_statement_of_the_python_version_agrees():
    """pyproject.toml requires-python, ruff's target-version, README "Python 3.N" and infra/Dockerfile's
    Ray image tag name the same minimum, and the interpreter running the tests meets it."""
    major, minor = minimum()
    assert pyproject()["tool"]["ruff"]["target-version"] == f"py{major}{minor}"
    assert f"Python {major}.{minor} " in (ROOT / "README.md").read_text()
    assert re.search(rf"ARG RAY_IMAGE=\S+-py{major}{minor}-", (ROOT / "infra" / "Dockerfile").read_text())
    assert sys.version_info[:2] >= (major, minor)


def test_the_code_needs_no_newer_python_than_it_requires():
    """Every module of the package parses with the minimum's grammar and imports no standard-library
    module that is newer (tomllib, 3.11, is what made 3.10 a false promise)."""
    oldest = minimum()
    for path in sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path), feature_version=oldest)
        too_new = {m: ADDED_IN[m] for m in imported_modules(tree) if ADDED_IN.get(m, oldest) > oldest}
        assert not too_new, f"{path.relative_to(ROOT)} imports {too_new}, newer than requires-python {oldest}"
