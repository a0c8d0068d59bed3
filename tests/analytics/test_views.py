"""The views on synthetic committed runs: committed rows only, empty outputs, moved outputs, S3.

Backs docs/analytics.md, "What is committed": readers through the Delta log (the views) see only
committed shards; a raw Parquet glob also sees files of shards that never committed.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from analytics import views
from pipeline import files
from pipeline.errors import UsageError
from pipeline.schema import PARTITION, PREDICTIONS, STATUSES
from pipeline.tables import OutputLayout
from tests.analytics import synthetic

LAYERS = {"blocks.1.0.se": 4, "blocks.2.0.se": 6}


def commit_two_runs(root: str) -> None:
    rows = synthetic.predictions("first", {"ok": 4, "decode_error": 2, "empty": 1})
    synthetic.commit_run(root, "first", rows,
                         synthetic.channel_stats("first", synthetic.gates(LAYERS, 0)))
    synthetic.commit_run(root, "second", synthetic.predictions("second", {"ok": 3}, prefix="s3://photos/more"),
                         synthetic.channel_stats("second", synthetic.gates(LAYERS, 0)), minutes=5,
                         run_date="2026-11-28")


def counts(con, sql: str) -> dict:
    return dict(con.sql(sql).fetchall())


def test_empty_output_has_every_view_with_its_columns(tmp_path):
    con = views.connect(str(tmp_path))

    for view in views.VIEWS:
        assert con.execute(f"SELECT count(*) FROM {view}").fetchone() == (0,)
    assert con.sql("SELECT * FROM predictions").columns == [*PREDICTIONS.names, PARTITION]
    assert con.sql("SELECT * FROM channel_stats").columns == [
        "run_id", "model", "weights_sha256", "layer", "channel", "count", "mean", "std", "min", "max", PARTITION]
    assert con.sql("SELECT * FROM runs").columns == views.RUNS.names


def test_missing_output_is_an_error(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        views.connect(str(tmp_path / "typo"))


def test_views_read_the_committed_runs(tmp_path):
    root = str(tmp_path / "out")
    commit_two_runs(root)
    con = views.connect(root)

    assert counts(con, "SELECT run_id, count(*) FROM predictions GROUP BY ALL") == {"first": 7, "second": 3}
    assert counts(con, "SELECT run_id, min(run_date) FROM predictions GROUP BY ALL") == {
        "first": date(2026, 11, 27), "second": date(2026, 11, 28)}
    assert counts(con, "SELECT run_id, count(*) FROM channel_stats GROUP BY ALL") == {"first": 10,
                                                                                       "second": 10}
    pruned = "SELECT run_date, count(*) FROM predictions WHERE run_date > DATE '2026-11-27' GROUP BY ALL"
    assert counts(con, pruned) == {date(2026, 11, 28): 3}


def test_runs_view_flattens_the_commit_records(tmp_path):
    root = str(tmp_path / "out")
    commit_two_runs(root)
    relation = views.connect(root).sql("SELECT * FROM runs ORDER BY committed_at")
    first, second = (dict(zip(relation.columns, r, strict=True)) for r in relation.fetchall())

    assert [first["run_id"], second["run_id"]] == ["first", "second"]
    assert {s: first[f"rows_{s}"] for s in STATUSES} == {
        "ok": 4, "read_error": 0, "decode_error": 2, "unsupported": 0, "too_large": 0, "empty": 1,
        "model_error": 0}
    assert first["rows"] == 7 and first["items_per_s"] == pytest.approx(7 / 4.0)
    assert first["inference_s"] == 4.0 and first["plan_s"] == 0.2
    assert first["prediction_files"] == 1 and first["inputs"] == ["s3://photos/in"]
    assert {e["status"]: e["count"] for e in first["top_errors"]} == {"decode_error": 2, "empty": 1}
    assert json.loads(first["config"]) == {"batch_size": 32, "topk": 4}
    assert second["run_date"] == date(2026, 11, 28) and second["committed_at"].tzinfo is not None


def test_files_of_uncommitted_shards_are_not_read(tmp_path):
    root = tmp_path / "out"
    commit_two_runs(str(root))
    layout = OutputLayout.of(str(root))
    # a shard whose files were written but whose driver died before committing it
    files.write_parquet(layout.table("predictions"), synthetic.predictions("dead", {"ok": 5}),
                        run_id="dead", attempt="0" * 12, run_date="2026-11-27", shard=0, digest="0" * 16)
    pq.write_table(synthetic.channel_stats("dead", synthetic.gates(LAYERS, 3)),
                   Path(layout.table("channel_stats")) / "run_date=2026-11-27" / "dead-00000-x.parquet")

    con = views.connect(str(root))

    assert counts(con, "SELECT run_id, count(*) FROM predictions GROUP BY ALL") == {"first": 7, "second": 3}
    assert {r for (r,) in con.sql("SELECT run_id FROM channel_stats").fetchall()} == {"first", "second"}
    assert {r for (r,) in con.sql("SELECT run_id FROM runs").fetchall()} == {"first", "second"}
    glob = f"{root}/predictions/run_date=*/*.parquet"
    raw = con.execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchone()[0]
    assert raw == 7 + 3 + 5, "a raw glob does see the uncommitted file: that is why the views read the log"


def test_a_moved_output_still_reads(tmp_path):
    commit_two_runs(str(tmp_path / "out"))
    shutil.move(tmp_path / "out", tmp_path / "archive")

    con = views.connect(str(tmp_path / "archive"))

    assert con.execute("SELECT count(*) FROM predictions").fetchone() == (10,)


def test_s3_output(s3fs_client, bucket):
    root = f"s3://{bucket}/labels"
    commit_two_runs(root)
    s3fs_client.pipe_file(f"{bucket}/labels/predictions/run_date=2026-11-27/orphan-00000.parquet",
                          synthetic_parquet())
    s3fs_client.invalidate_cache()

    con = views.connect(root)

    assert counts(con, "SELECT status, count(*) FROM predictions GROUP BY ALL") == {
        "ok": 7, "decode_error": 2, "empty": 1}
    assert con.execute("SELECT count(*) FROM channel_stats").fetchone() == (20,)
    assert con.execute("SELECT count(*) FROM channel_drift WHERE NOT shifted").fetchone() == (2,)
    assert con.execute("SELECT count(*) FROM runs").fetchone() == (2,)


def synthetic_parquet() -> bytes:
    import io

    buffer = io.BytesIO()
    pq.write_table(synthetic.predictions("orphan", {"ok": 9}), buffer)
    return buffer.getvalue()


def test_s3_sees_a_run_committed_after_an_earlier_connect(bucket):
    root = f"s3://{bucket}/labels"
    commit_two_runs(root)
    before = views.connect(root).execute("SELECT count(*) FROM runs").fetchone()
    synthetic.commit_run(root, "third", synthetic.predictions("third", {"ok": 2}),
                         synthetic.channel_stats("third", synthetic.gates(LAYERS, 1)), minutes=9)

    after = views.connect(root).execute("SELECT count(*) FROM predictions").fetchone()

    assert before == (2,) and after == (12,)
