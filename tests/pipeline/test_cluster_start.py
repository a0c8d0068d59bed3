"""``cluster.starting``: a private local Ray started in the background serves the driver's thread
once joined, and goes with the block: shut down, its temp dir removed, also when the block is left
on an error before the join (a usage error found while Ray was starting)."""

from __future__ import annotations

import glob
import os
import tempfile

import pytest
import ray

from pipeline import cluster


def test_a_ray_started_in_the_background_serves_the_driver_and_ends_with_the_block(ray_tmp, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", ray_tmp)
    with cluster.starting(num_cpus=1, warm=("json",)) as join:
        description = join()
        assert description.startswith("a local Ray (1 CPUs, temp dir ")
        # The driver's own thread uses it: a task runs (its raylet lives as long as the starting thread).
        assert ray.get(ray.remote(lambda: os.getpid()).remote()) != os.getpid()
        assert glob.glob(os.path.join(ray_tmp, "ghostnet-ray-*"))
    assert not ray.is_initialized()
    assert not glob.glob(os.path.join(ray_tmp, "ghostnet-ray-*")), "the private temp dir goes with the session"


def test_leaving_before_the_join_still_ends_the_ray_it_started(ray_tmp, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", ray_tmp)
    with pytest.raises(ValueError, match="a check failed"), cluster.starting(num_cpus=1):
        raise ValueError("a check failed while Ray was starting")
    assert not ray.is_initialized()
    assert not glob.glob(os.path.join(ray_tmp, "ghostnet-ray-*"))
