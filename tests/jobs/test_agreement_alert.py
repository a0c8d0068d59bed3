"""``nightly --alert-agreement MIN`` on a hand-built output with known answers (docs/operations.md,
"Agreement alerts"): the production model P and a candidate C agree on 11 of the 14 items tonight's
runs labeled, whichever night P labeled them; items no run of tonight labeled do not count."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from jobs.nightly import agreement_alerts
from pipeline import commit
from pipeline import record as records
from pipeline.commit import RunIdentity
from pipeline.delta import open_tables
from pipeline.fencing import Attempt
from pipeline.model import ModelIdentity
from pipeline.record import ModelRecord, RunRecord
from pipeline.schema import CHANNEL_STATS, PREDICTIONS
from pipeline.tables import OutputLayout

P = ModelIdentity("ghostnet_100", "aa" * 32)
C = ModelIdentity("ghostnet_100", "cc" * 32)
NIGHT = "2026-12-01"


def rows(run_id: str, model: ModelIdentity, labels: dict[int, str]) -> pa.Table:
    return pa.Table.from_pylist([{
        "uri": f"s3://photos/{i:03d}.jpg", "etag": "e", "size_bytes": 10, "modality": "image", "segment": 0,
        "status": "ok", "label": label, "score": 0.9, "topk_ids": [0], "topk_labels": [label], "topk_scores": [0.9],
        "model": model.model, "weights_sha256": model.weights_sha256, "run_id": run_id,
        "processed_at": datetime(2026, 12, 1, tzinfo=timezone.utc)} for i, label in labels.items()], schema=PREDICTIONS)


def committed_run(root: str, run_id: str, kind: str, run_date: str, labeled: dict[ModelIdentity, dict[int, str]],
                  roles: dict[ModelIdentity, str]) -> None:
    layout = OutputLayout.of(root)
    models = tuple(labeled)
    identity = RunIdentity(run_id, run_date, models, reprocess=False)
    commit.write_and_commit(layout, open_tables(layout), identity, Attempt.new(run_id), shard=0, digest="0" * 16,
                            rows=pa.concat_tables([rows(run_id, m, labels) for m, labels in labeled.items()]),
                            stats=CHANNEL_STATS.empty_table())
    items = len({i for labels in labeled.values() for i in labels})
    records.write(layout.runs, RunRecord(
        run_id=run_id, kind=kind, run_date=run_date, model=models[0].model, weights="w",
        weights_sha256=models[0].weights_sha256, modality="image", status=records.COMMITTED, items=items,
        models=[ModelRecord(m.model, "w", m.weights_sha256, roles.get(m), items=len(labels))
                for m, labels in labeled.items()]))


@pytest.fixture
def output(tmp_path) -> str:
    root = str(tmp_path / "out")
    roles = {P: "production", C: "candidate"}
    # Last night P labeled items 0-9; tonight P labels the new items 10-13 and the candidate, new
    # tonight, all of 0-13: it agrees on 7 of the first 10 and on the 4 new ones, 11 of 14.
    committed_run(root, "nightly-2026-11-30-a", "nightly", "2026-11-30", {P: {i: "cat" for i in range(10)}}, roles)
    candidate = {i: "cat" if i < 7 or i >= 10 else "dog" for i in range(14)}
    committed_run(root, "nightly-2026-12-01-b", "nightly", NIGHT,
                  {P: {i: "cat" for i in range(10, 14)}, C: candidate}, roles)
    # An ad-hoc run where both disagree everywhere on items no nightly run of tonight labeled.
    committed_run(root, "adhoc", "run", NIGHT, {P: {i: "cat" for i in range(20, 30)},
                                                 C: {i: "dog" for i in range(20, 30)}}, roles)
    return root


def test_a_candidate_under_the_minimum_alerts_with_its_agreement(output):
    [(run_id, message)] = agreement_alerts(output, NIGHT, 0.8)
    assert run_id == "nightly-2026-12-01-b"
    assert f"candidate {C}" in message and f"production {P}" in message
    assert "78.6% of 14 items" in message, "11 of the night's 14 items, not the ad-hoc run's"


def test_a_candidate_at_or_over_the_minimum_is_quiet(output):
    assert agreement_alerts(output, NIGHT, 11 / 14) == []
    assert agreement_alerts(output, NIGHT, 0.5) == []


def test_a_night_without_roles_or_without_a_candidate_is_quiet(tmp_path):
    root = str(tmp_path / "out")
    committed_run(root, "nightly-2026-12-01-x", "nightly", NIGHT, {P: {0: "cat"}, C: {0: "dog"}}, {})
    assert agreement_alerts(root, NIGHT, 0.99) == []


@pytest.mark.subprocess
def test_the_alert_without_a_production_and_a_candidate_is_a_usage_error(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "nightly", "--input", str(tmp_path), "--output", str(tmp_path / "out"),
         "--date", NIGHT, "--model", "ghostnet_050", "--weights", "random", "--role", "production",
         "--model", "ghostnet_100", "--weights", "random", "--alert-agreement", "0.9"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert done.returncode == 2 and "--role candidate" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()
