"""``analytics.Output``: an output's committed tables for analysts (docs/analytics.md, "From Python"),
read back from runs committed through the pipeline's own commit path."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from analytics import Output
from pipeline.errors import UsageError
from tests.analytics import synthetic

LAYERS = {"blocks.1.0.se": 4}


@pytest.fixture
def output(tmp_path) -> str:
    root = str(tmp_path / "out")
    synthetic.commit_run(root, "first", synthetic.predictions("first", {"ok": 4, "decode_error": 2}),
                         synthetic.channel_stats("first", synthetic.gates(LAYERS, 0)), run_date="2026-11-27")
    synthetic.commit_run(root, "second", synthetic.predictions("second", {"ok": 3}, prefix="s3://photos/more",
                                                               model="ghostnet_100"),
                         synthetic.channel_stats("second", synthetic.gates(LAYERS, 1), model="ghostnet_100"),
                         minutes=5, run_date="2026-11-28", model="ghostnet_100")
    return root


def test_filters_by_date_run_model_and_status(output):
    """"filtered by date, run or model": each filter keeps exactly its rows."""
    labels = Output(output)

    assert labels.predictions().to_arrow().num_rows == 9
    assert labels.predictions(run_date="2026-11-28").to_arrow()["run_id"].unique().to_pylist() == ["second"]
    assert labels.predictions(since=date(2026, 11, 28)).to_arrow().num_rows == 3
    assert labels.predictions(until="2026-11-27").to_arrow().num_rows == 6
    assert labels.predictions(run_id="first", status="decode_error").to_arrow().num_rows == 2
    assert labels.predictions(model="ghostnet_050").to_arrow()["model"].unique().to_pylist() == ["ghostnet_050"]
    assert labels.predictions(weights_sha256="no-such-digest").to_arrow().num_rows == 0
    assert set(labels.channel_stats(model="ghostnet_100").to_arrow()["run_id"].to_pylist()) == {"second"}
    assert [r.run_id for r in labels.runs()] == ["first", "second"]


def test_pandas_keeps_nulls_null_and_duckdb_gets_a_relation(output):
    """"null means nothing": in pandas an ok row's error is <NA>, not NaN or "nan"; DuckDB sees the
    same selection as a relation."""
    labels = Output(output)
    df = labels.predictions(run_id="first", columns=["uri", "status", "error", "score"]).to_pandas()

    assert list(df.columns) == ["uri", "status", "error", "score"]
    ok = df[df["status"] == "ok"]
    assert len(ok) == 4 and ok["error"].isna().all() and "nan" not in df["error"].astype(str).tolist()
    assert df.loc[df["status"] != "ok", "score"].isna().all()
    assert isinstance(df["error"].dtype, pd.ArrowDtype)

    relation = labels.predictions(since="2026-11-27").to_duckdb()
    assert relation.aggregate("run_id, count(*) AS n").order("run_id").fetchall() == [("first", 6), ("second", 3)]
    batches = list(labels.predictions(status="ok").to_batches())
    assert sum(b.num_rows for b in batches) == 7


def test_bad_filters_and_a_missing_output_say_what_to_write(output, tmp_path):
    with pytest.raises(UsageError, match="YYYY-MM-DD"):
        Output(output).predictions(since="last tuesday")
    with pytest.raises(UsageError, match="not both"):
        Output(output).predictions(run_date="2026-11-27", until="2026-11-28")
    with pytest.raises(UsageError, match="does not exist"):
        Output(str(tmp_path / "nowhere"))
