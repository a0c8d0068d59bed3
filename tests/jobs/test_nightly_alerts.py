"""``nightly --alert-drift BITS`` and ``--log-format json``, through the CLI as a scheduler runs it: two
nights into one output on the S3 endpoint, the second on a visibly different mix of pictures.

Backs docs/operations.md, "Exit codes" (4: committed, but the drift went over --alert-drift) and
"Logs" (one JSON object per line, no credential).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from analytics.views import query
from pipeline import logs
from tests import corpus
from tests.analytics.test_end_to_end import checkerboard
from tests.conftest import ACCESS_KEY, SECRET_KEY
from tests.output import run_records


def nightly(images, output: str, date: str, ray_address: str, *flags: str, alert: str = "0.001"
            ) -> subprocess.CompletedProcess:
    """The CLI in a process of its own, as a scheduler starts it, joining the session's Ray."""
    command = [sys.executable, "-m", "jobs.cli", "nightly", "--address", ray_address,
               "--input", str(images), "--output", output,
               "--model", "ghostnet_050", "--weights", "random", "--num-classes", "4", "--shard-size", "6",
               "--date", date, "--alert-drift", alert, *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def nights(s3fs_client, ray_local, tmp_path_factory):
    """Night one: gradients. Night two: checkerboards, with JSON logs."""
    output = "s3://alerts-" + ACCESS_KEY.lower()[-8:]
    s3fs_client.mkdir(output.removeprefix("s3://"))
    first, second = tmp_path_factory.mktemp("night1"), tmp_path_factory.mktemp("night2")
    for i in range(12):
        corpus.gradient(64, 48, seed=i).save(first / f"g{i:02d}.png")
        checkerboard(seed=i).save(second / f"c{i:02d}.png")
    one = nightly(first, output, "2026-11-28", ray_local.address)
    two = nightly(second, output, "2026-11-29", ray_local.address, "--log-format", "json")
    return output, one, two, ray_local.address


def as_json(line: str) -> dict | None:
    try:
        return json.loads(line)
    except ValueError:
        return None


def test_drift_over_the_threshold_exits_4_after_committing(nights):
    """docs/operations.md, "Exit codes": exit 4 once the night committed and its drift is over
    --alert-drift; a first night has nothing to compare with and exits 0. Seen failing when the alert
    compared against a threshold 1000 times higher."""
    output, one, two, _ = nights
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 4, two.stderr[-3000:]
    records = {r.run_date: r for r in run_records(output)}
    assert records["2026-11-28"].committed and records["2026-11-29"].committed
    assert records["2026-11-28"].items == records["2026-11-29"].items == 12
    [(rows,)] = query(output, "SELECT count(*) FROM predictions").rows
    assert rows == 24
    [(previous, label_js)] = query(output, "SELECT previous_run_id, label_js_divergence FROM label_drift").rows
    assert previous == records["2026-11-28"].run_id and label_js is not None
    alert = [line for line in two.stderr.splitlines() if "drift alert" in line]
    assert alert and records["2026-11-29"].run_id in alert[0] and "over --alert-drift 0.001" in alert[0]


def test_drift_under_the_threshold_exits_0(nights, tmp_path):
    """docs/operations.md, "Exit codes" and "Drift alerts": a night compared with the previous one whose
    drift stays under --alert-drift exits 0 without an alert (JS divergences are at most 1 bit)."""
    output, _, _, ray_address = nights
    for i in range(6):
        checkerboard(seed=100 + i).save(tmp_path / f"c{i:02d}.png")
    three = nightly(tmp_path, output, "2026-11-30", ray_address, alert="1.0")
    assert three.returncode == 0, three.stderr[-3000:]
    assert "drift alert" not in three.stderr
    [record] = [r for r in run_records(output) if r.run_date == "2026-11-30"]
    assert record.committed and record.items == 6
    [(previous, label_js)] = query(output, "SELECT previous_run_id, label_js_divergence FROM label_drift "
                                           f"WHERE run_id = '{record.run_id}'").rows
    assert previous.startswith("nightly-2026-11-29") and label_js is not None and label_js <= 1.0


def test_json_logs_carry_run_shard_stage_counts_and_no_credential(nights):
    """docs/operations.md, "Logs": with --log-format json, the run's own lines are JSON objects; commits
    carry run id, shard, stage and counts; the S3 credentials appear nowhere on stderr or stdout."""
    _, _, two, _ = nights
    parsed = [p for p in map(as_json, two.stderr.splitlines()) if p is not None]
    commits = [p for p in parsed if p.get("stage") == "commit"]
    assert sorted(c["shard"] for c in commits) == [0, 1]  # in the order they committed
    assert all(c["run_id"].startswith("nightly-2026-11-29") for c in commits)
    assert sum(sum(c["counts"].values()) for c in commits) == 12
    assert any(p["logger"].startswith("ray.data") for p in parsed)  # Ray Data's own lines came through
    assert SECRET_KEY not in two.stderr + two.stdout and ACCESS_KEY not in two.stderr + two.stdout


def test_every_json_log_line_parses(nights):
    """docs/operations.md, "Logs": every stderr line is one JSON object, Ray's and Ray Data's lines and the
    drift alert included."""
    _, _, two, _ = nights
    for line in two.stderr.splitlines():
        if line.strip():
            assert isinstance(json.loads(line), dict), line


def test_json_formatter_redacts_credentials(monkeypatch):
    """docs/operations.md, "Logs": a message that holds a secret or a URL's user info is redacted."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    record = logging.LogRecord("ghostnet_pipeline", logging.WARNING, __file__, 1,
                               "reading s3://me:%s@bucket/x failed", (SECRET_KEY,), None)
    record.counts = {"note": f"key {SECRET_KEY}"}
    line = logs.JsonFormatter().format(record)
    assert SECRET_KEY not in line and json.loads(line)["message"] == "reading s3://***@bucket/x failed"
