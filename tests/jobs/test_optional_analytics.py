"""DuckDB and matplotlib are the ``analytics`` extra (#17: "heavy dependencies optional where a cluster
node does not need them"): without them the CLI and the run's entry points work, and what needs them
says which package is missing and how to install it (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parents[2]

# Runs the CLI in a process where importing duckdb or matplotlib fails, as on a node without the extra.
WITHOUT_EXTRA = """
import importlib.abc, sys

class WithoutTheExtra(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("duckdb", "matplotlib"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, WithoutTheExtra())
from jobs import cli
code = cli.main(sys.argv[1:])
assert "duckdb" not in sys.modules and "matplotlib" not in sys.modules
sys.exit(code)
"""


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_EXTRA, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_the_cli_and_a_dry_run_need_no_analytics_extra(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(b"not decoded by a dry run")

    assert cli("models").returncode == 0
    done = cli("run", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--model", "ghostnet_050",
               "--weights", "random", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "to label:        1" in done.stdout


@pytest.mark.parametrize("command", ["query", "report"])
def test_query_and_report_without_the_extra_say_what_to_install(tmp_path, command):
    (tmp_path / "out").mkdir()
    args = {"query": [str(tmp_path / "out"), "SELECT 1"],
            "report": [str(tmp_path / "out"), "--out", str(tmp_path / "r.html")]}[command]

    done = cli(command, *args)

    assert done.returncode == 2, done.stderr
    assert "is not installed here" in done.stderr
    assert "pip install 'ghostnet-pipeline[analytics]'" in done.stderr


def test_nightly_alert_drift_without_the_extra_refuses_before_the_night(tmp_path):
    """docs/operations.md §7.3: without DuckDB, `--alert-drift` exits 2 before anything is written."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(b"x")

    done = cli("nightly", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--model",
               "ghostnet_050", "--weights", "random", "--date", "2026-11-30", "--alert-drift", "0.1")

    assert done.returncode == 2, done.stderr
    assert "duckdb is not installed here" in done.stderr
    assert not (tmp_path / "out").exists()
