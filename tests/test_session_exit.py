"""The condition under which the test process skips the C++ exit handlers (tests/conftest.py): Ray's
C++ threads. If a Ray upgrade renames them, the ray test fails instead of the guard going quiet."""

import pytest

from tests.conftest import ray_threads_left


def test_a_process_without_ray_has_none_of_its_threads():
    assert ray_threads_left() == []


@pytest.mark.usefixtures("ray_local")
def test_a_process_that_runs_ray_has_the_threads_the_guard_looks_for():
    assert "gcs_client_io_s" in ray_threads_left()
