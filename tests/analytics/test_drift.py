"""The drift definition on known vectors, and the channel_drift view on synthetic committed runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analytics import views
from analytics.views import JS_SHIFT_BITS, layer_drift
from tests.analytics import synthetic

LAYERS = {"blocks.1.0.se": 8, "blocks.2.0.se": 16, "blocks.10.0.se": 24}


def test_identical_vectors_do_not_drift():
    drift = layer_drift([0.2, 0.5, 0.9], [0.2, 0.5, 0.9])
    assert drift.js_divergence == 0.0 and drift.cosine_distance == pytest.approx(0.0, abs=1e-12)
    assert drift.shifted is False


def test_disjoint_channels_are_one_bit_apart():
    drift = layer_drift([1.0, 0.0], [0.0, 1.0])
    assert drift.js_divergence == pytest.approx(1.0)
    assert drift.cosine_distance == pytest.approx(1.0)
    assert drift.shifted is True


def test_known_value_in_bits():
    p, q = np.array([0.75, 0.25]), np.array([0.25, 0.75])
    m = (p + q) / 2
    expected = 0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m))
    assert layer_drift(p, q).js_divergence == pytest.approx(expected)
    assert layer_drift(p, q).js_divergence == pytest.approx(layer_drift(q, p).js_divergence)


def test_uniform_scaling_is_not_drift():
    """Gating every channel more strongly keeps the distribution over channels: JS is 0."""
    p = np.array([0.1, 0.4, 0.7, 0.3])
    drift = layer_drift(p, p * 0.5)
    assert drift.js_divergence == pytest.approx(0.0, abs=1e-12)
    assert drift.cosine_distance == pytest.approx(0.0, abs=1e-12)


def test_threshold_decides_shifted():
    p = np.full(10, 0.5)
    q = p.copy()
    q[0] = 0.9
    js = layer_drift(p, q).js_divergence
    assert layer_drift(p, q, threshold=js * 1.01).shifted is False
    assert layer_drift(p, q, threshold=js * 0.99).shifted is True


@pytest.mark.parametrize(
    ("previous", "current"),
    [([0.5, 0.5], [0.5]), ([], []), ([0.5, math.nan], [0.5, 0.5]), ([-0.1, 0.5], [0.5, 0.5])],
)
def test_undefined_inputs_give_nulls(previous, current):
    assert layer_drift(previous, current) == views.LayerDrift(None, None, None)


def test_all_zero_gates_have_no_distance():
    assert layer_drift([0.0, 0.0], [0.5, 0.5]) == views.LayerDrift(None, None, None)
    assert layer_drift([0.0, 0.0], [0.0, 0.0]).js_divergence is None


@pytest.fixture(scope="module")
def drift_output(tmp_path_factory) -> str:
    """Runs in commit order: a and b on the same gates, c moved, d another model, e all failed."""
    root = str(tmp_path_factory.mktemp("drift") / "out")
    same, moved = synthetic.gates(LAYERS, seed=0), synthetic.gates(LAYERS, seed=1)
    runs = [
        ("a", same, synthetic.MODEL),
        ("b", same, synthetic.MODEL),
        ("d", moved, "ghostnetv2_100"),
        ("c", moved, synthetic.MODEL),
    ]
    for minute, (run_id, gates, model) in enumerate(runs):
        synthetic.commit_run(root, run_id, synthetic.predictions(run_id, {"ok": 3}, model=model),
                             synthetic.channel_stats(run_id, gates, model=model), minutes=minute, model=model)
    synthetic.commit_run(root, "e", synthetic.predictions("e", {"decode_error": 2}),
                         synthetic.channel_stats("e", {}), minutes=10)
    return root


def drift_rows(root: str) -> dict[tuple[str, str], dict]:
    con = views.connect(root)
    relation = con.sql("SELECT * FROM channel_drift")
    rows = [dict(zip(relation.columns, r, strict=True)) for r in relation.fetchall()]
    return {(r["run_id"], r["layer"]): r for r in rows}


def test_view_pairs_each_run_with_the_previous_of_same_model_and_weights(drift_output):
    rows = drift_rows(drift_output)

    assert {run for run, _ in rows} == {"b", "c"}, "a and d have no predecessor, e has no channel stats"
    assert {r["previous_run_id"] for r in rows.values() if r["run_id"] == "c"} == {"b"}
    assert {layer for _, layer in rows} == set(LAYERS)
    for layer, channels in LAYERS.items():
        same, moved = rows[("b", layer)], rows[("c", layer)]
        assert same["channels"] == moved["channels"] == channels
        assert same["js_divergence"] == pytest.approx(0.0, abs=1e-12) and same["shifted"] is False
        assert moved["js_divergence"] > JS_SHIFT_BITS and moved["shifted"] is True


def test_view_matches_the_function(drift_output):
    con = views.connect(drift_output)
    sql = "SELECT run_id, layer, list(mean ORDER BY channel) FROM channel_stats GROUP BY ALL"
    stats = con.sql(sql).fetchall()
    means = {(run, layer): vector for run, layer, vector in stats}
    for (run, layer), row in drift_rows(drift_output).items():
        expected = layer_drift(means[(row["previous_run_id"], layer)], means[(run, layer)])
        assert row["js_divergence"] == pytest.approx(expected.js_divergence, abs=1e-15)
        assert row["cosine_distance"] == pytest.approx(expected.cosine_distance, abs=1e-15)


def test_view_columns_follow_the_documented_schema(drift_output):
    con = views.connect(drift_output)
    assert con.sql("SELECT * FROM channel_drift").columns == views.CHANNEL_DRIFT.names
