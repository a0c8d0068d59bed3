"""Nightly runs: incremental by (uri, etag, size), idempotent per date; identical runs started at
once on one output. (The run killed mid-way and run again is in test_faults.py.)

Backs docs/operations.md, "Concurrent runs": two runs of the same model and weights leave one row
per item in total; two --reprocess runs leave one row per item for each run id.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow.compute as pc
import pytest

from analytics.views import query
from pipeline.config import RunConfig
from pipeline.nightly import nightly
from tests import corpus
from tests.output import committed, rows_per_run, run_records


def rows(output):
    return committed(str(output)).to_pylist()


@pytest.mark.usefixtures("ray_local")
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
    assert again.items == 0 and "already committed" in again.error
    assert second.committed and second.items == 3 and second.items_listed == 7
    table = rows(output)
    by_night = {d: sorted(r["uri"].rsplit("/", 1)[1] for r in table if str(r["run_date"]) == d)
                for d in ("2026-11-26", "2026-11-27")}
    assert by_night == {"2026-11-26": [f"p{i}.png" for i in range(5)],
                        "2026-11-27": ["p0.png", "p5.png", "p6.png"]}
    versions = [(r["uri"], r["etag"], r["size_bytes"]) for r in table]
    assert len(versions) == len(set(versions)) == 8
    # docs/analytics.md schema: null means nothing, for batches of only ok items too (#16.15, #16.16)
    [(images, no_times, no_error)] = query(str(output), "SELECT count(*), count(*) FILTER (start_s IS NULL AND "
                                           "end_s IS NULL), count(*) FILTER (error IS NULL) FROM predictions "
                                           "WHERE modality = 'image' AND status = 'ok'").rows
    assert images == no_times == no_error == 8


def start(command: list[str], ray_address: str) -> subprocess.Popen:
    """The CLI in a process of its own, joining the session's Ray, as two jobs on one cluster would."""
    return subprocess.Popen([sys.executable, "-m", "jobs.cli", *command, "--address", ray_address],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("command", [
    ["nightly", "--date", "2026-11-28"],
    ["run", "--reprocess"],
])
def test_identical_runs_started_at_once(tmp_path, ray_local, command):
    images, output = tmp_path / "in", tmp_path / "out"
    images.mkdir()
    for i in range(12):
        corpus.gradient(40, 30, seed=i).save(images / f"p{i:02d}.png")
    args = [*command, "--input", str(images), "--output", str(output), "--model", "ghostnet_050",
            "--weights", "random", "--num-classes", "3", "--shard-size", "4"]

    runs = [start(args, ray_local.address) for _ in range(2)]
    outcomes = [r.communicate(timeout=900) for r in runs]

    assert [r.returncode for r in runs] == [0, 0], [err[-2000:] for _, err in outcomes]
    table = committed(str(output))
    per_run = rows_per_run(str(output))
    if "--reprocess" in command:
        assert per_run and all(n == 12 for n in per_run.values()), per_run
        for run_id in per_run:
            mine = table.filter(pc.equal(table["run_id"], run_id))
            assert pc.count_distinct(mine["uri"]).as_py() == 12
    else:
        assert table.num_rows == pc.count_distinct(table["uri"]).as_py() == 12, per_run
    assert all(r.committed for r in run_records(str(output)))
