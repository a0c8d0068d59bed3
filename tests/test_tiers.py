"""The unit tier keeps itself honest (tests/tiers.py): a pytest session of its own, with our hooks,
over tests that each do one thing a unit test must not, or may."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parents[1]

CONFTEST = """
from tests.conftest import pytest_collection_modifyitems, pytest_runtest_makereport, pytest_runtest_protocol
"""

INI = """
[pytest]
markers =
    unit: u
    subprocess: p
    s3: s
    ray: r
    cluster: c
    slow: l
"""

TESTS = '''
import socket, subprocess, sys, threading
import pytest
from tests.tiers import NO_SERVER


def test_runs_python():
    subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_starts_a_ray(tmp_path):
    raylet = tmp_path / "raylet"
    raylet.write_text("#!/bin/sh\\nexit 0\\n")
    raylet.chmod(0o755)
    subprocess.run([str(raylet)], check=True)


def test_hides_what_it_did():
    try:
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    except BaseException:
        pass


def test_talks_to_a_server():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=5):
            pass


def test_runs_a_shell_and_reaches_no_server():
    subprocess.run(["sh", "-c", "exit 0"], check=True)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(NO_SERVER, timeout=5)


@pytest.mark.subprocess
def test_marked_subprocess():
    subprocess.run([sys.executable, "-c", "pass"], check=True)
'''


def test_a_unit_test_doing_another_tiers_work_fails_naming_the_tier(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_inner.py").write_text(TESTS)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q", str(tmp_path)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )
    summary = {line.split(" ")[1].split("::")[-1]: line for line in done.stdout.splitlines()
               if line.startswith(("PASSED ", "FAILED "))}
    assert set(summary) == {"test_runs_python", "test_starts_a_ray", "test_hides_what_it_did",
                            "test_talks_to_a_server", "test_runs_a_shell_and_reaches_no_server",
                            "test_marked_subprocess"}, done.stdout + done.stderr
    assert summary["test_runs_python"].startswith("FAILED ") and "mark it `subprocess`" in done.stdout
    assert summary["test_starts_a_ray"].startswith("FAILED ") and "starts a Ray" in done.stdout
    assert summary["test_hides_what_it_did"].startswith("FAILED ")
    assert summary["test_talks_to_a_server"].startswith("FAILED ") and "opens a TCP connection" in done.stdout
    assert summary["test_runs_a_shell_and_reaches_no_server"].startswith("PASSED ")
    assert summary["test_marked_subprocess"].startswith("PASSED ")
    assert done.returncode == 1
