"""Nightly runs: incremental by (uri, etag, size), idempotent per date, guarded by a lease.
(The run killed mid-way and run again is in test_faults.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow.dataset as pads
import pytest

from pipeline import lock
from pipeline.config import RunConfig
from pipeline.lock import LockHeld
from pipeline.nightly import lock_uri, nightly
from tests import corpus

pytestmark = pytest.mark.usefixtures("ray_local")


def rows(output):
    return pads.dataset(str(output / "predictions"), partitioning="hive").to_table().to_pylist()


def test_first_night_rerun_then_new_and_changed_files(tmp_path):
    images, output = tmp_path / "in", tmp_path / "out"
    images.mkdir()
    for i in range(5):
        corpus.gradient(40, 30, seed=i).save(images / f"p{i}.png")
    config = RunConfig(inputs=(str(images),), output=str(output), model="ghostnet_050", weights="random",
                       num_classes=3, run_date="2026-11-26")

    [first] = nightly(config)
    [again] = nightly(config)
    corpus.gradient(40, 30, seed=10).save(images / "p5.png")
    corpus.gradient(40, 30, seed=11).save(images / "p6.png")
    corpus.gradient(41, 30, seed=12).save(images / "p0.png")  # changed: new content, size and mtime
    os.utime(images / "p0.png", ns=(1, 2_000_000_000_000_000_000))
    [second] = nightly(config.replace(run_date="2026-11-27"))

    assert first.committed and first.items == 5
    assert not again.committed and "already committed" in again.message
    assert second.committed and second.items == 3 and second.items_listed == 7
    table = rows(output)
    by_night = {d: sorted(r["uri"].rsplit("/", 1)[1] for r in table if str(r["run_date"]) == d)
                for d in ("2026-11-26", "2026-11-27")}
    assert by_night == {"2026-11-26": [f"p{i}.png" for i in range(5)],
                        "2026-11-27": ["p0.png", "p5.png", "p6.png"]}
    versions = [(r["uri"], r["etag"], r["size_bytes"]) for r in table]
    assert len(versions) == len(set(versions)) == 8


def test_a_second_nightly_on_the_same_output_is_refused(tmp_path):
    (tmp_path / "in").mkdir()
    corpus.gradient(40, 30).save(tmp_path / "in" / "a.png")
    output = tmp_path / "out"
    config = RunConfig(inputs=(str(tmp_path / "in"),), output=str(output), model="ghostnet_050",
                       weights="random", num_classes=3, run_date="2026-11-28")
    args = [sys.executable, "-m", "jobs.cli", "nightly", "--input", str(tmp_path / "in"), "--output", str(output),
            "--model", "ghostnet_050", "--weights", "random", "--num-classes", "3", "--date", "2026-11-28"]

    with lock.acquire(lock_uri(str(output))):
        with pytest.raises(LockHeld, match="another run holds"):
            nightly(config)
        refused = subprocess.run(args, capture_output=True, text=True, timeout=300)

    assert refused.returncode == 3 and "another run holds" in refused.stderr
    assert not (output / "predictions").exists()
    [after] = nightly(config)
    assert after.committed and after.items == 1
