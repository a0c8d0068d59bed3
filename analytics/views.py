"""SQL over one output with DuckDB, showing committed data only.

:func:`connect` opens an in-memory DuckDB connection with four views:

- ``predictions``: every committed row, through the predictions table's Delta log, plus
  ``run_date``;
- ``channel_stats``: per (run, layer, channel) channel-weight statistics, the committed shards'
  sums added up, plus ``run_date``;
- ``runs``: one row per run record, flattened (:data:`RUNS`), running and failed runs included;
- ``channel_drift``: per layer, each committed run against the previous committed run of the
  same model and weights (:data:`CHANNEL_DRIFT`, distances from :func:`layer_drift`);
- ``label_drift``: each committed run's top-1 label distribution and score histogram against the
  previous committed run of the same model and weights (:data:`LABEL_DRIFT`), from the run records;
- ``model_agreement``: how two (model, weights) label the items both labeled
  (:data:`analytics.agreement.MODEL_AGREEMENT`); :func:`query` adds it when the SQL names it,
  :func:`analytics.agreement.create_view` adds it to a connection.

Files a run wrote but did not commit are never read: the tables are read through their logs
(deltalake's Arrow datasets, which DuckDB scans), local or on S3.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from analytics import agreement, require
from analytics.agreement import ModelIdentity
from analytics.output import QueryResult
from pipeline import record as records
from pipeline import storage
from pipeline.delta import open_table
from pipeline.errors import UsageError
from pipeline.kinds import Modality
from pipeline.record import STAGES, RunRecord
from pipeline.schema import CHANNEL_STATS, STATUSES
from pipeline.tables import OutputLayout, table_schema

if TYPE_CHECKING:
    import duckdb
    from duckdb import DuckDBPyConnection

__all__ = [
    "CHANNEL_DRIFT",
    "CHANNEL_STATS_VIEW",
    "JS_SHIFT_BITS",
    "LABEL_DRIFT",
    "LABEL_SHIFT_BITS",
    "RUNS",
    "TIMINGS",
    "VIEWS",
    "LayerDrift",
    "QueryResult",
    "RunDrift",
    "connect",
    "distribution_js",
    "label_drift_table",
    "layer_drift",
    "query",
    "run_drift",
    "runs_table",
]

VIEWS = ("predictions", "channel_stats", "runs", "channel_drift", "label_drift")

# A layer has shifted when the Jensen-Shannon divergence between its normalized channel-mean
# vectors exceeds this many bits. Chosen from measurements recorded in docs/analytics.md.
JS_SHIFT_BITS = 0.001

# A run's label distribution has shifted when its Jensen-Shannon divergence from the previous run's
# exceeds this many bits: a starting point (0.05 bits is, for instance, 10% of the rows moving from one
# label to another new one), not a measured boundary; `nightly --alert-drift` takes its own threshold.
LABEL_SHIFT_BITS = 0.05

TIMINGS = ("plan_s", "inference_s", "total_s")
# Seconds of work per stage (pipeline.record.STAGES; planning is plan_s above).
STAGE_COLUMNS = tuple(f"{stage}_s" for stage in STAGES if stage != "plan")

RUNS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("kind", pa.string()),
        pa.field("run_date", pa.date32()),
        pa.field("status", pa.string()),
        pa.field("committed_at", pa.timestamp("us", tz="UTC")),
        pa.field("model", pa.string()),
        pa.field("weights", pa.string()),
        pa.field("weights_sha256", pa.string()),
        pa.field("modality", pa.string()),
        pa.field("labels", pa.int64()),
        pa.field("inputs", pa.list_(pa.string())),
        pa.field("items_listed", pa.int64()),
        pa.field("items_skipped", pa.int64()),
        pa.field("items", pa.int64()),
        pa.field("rows", pa.int64()),
        *(pa.field(f"rows_{status}", pa.int64()) for status in STATUSES),
        pa.field(
            "top_errors",
            pa.list_(
                pa.struct(
                    [
                        pa.field("status", pa.string()),
                        pa.field("error", pa.string()),
                        pa.field("count", pa.int64()),
                        pa.field("uri", pa.string()),
                    ]
                )
            ),
        ),
        *(pa.field(name, pa.float64()) for name in TIMINGS),
        pa.field("items_per_s", pa.float64()),
        *(pa.field(name, pa.float64()) for name in STAGE_COLUMNS),
        pa.field("model_actors", pa.int64()),
        pa.field("model_busy", pa.float64()),
        pa.field("bound", pa.string()),
        pa.field("shard_size", pa.int64()),
        pa.field("shards_total", pa.int64()),
        pa.field("shards_committed", pa.int64()),
        pa.field("conflicts", pa.int64()),
        pa.field("prediction_files", pa.int64()),
        pa.field("not_items", pa.string()),
        pa.field("error", pa.string()),
        pa.field("started_at", pa.timestamp("us", tz="UTC")),
        pa.field("config", pa.string()),
        pa.field("versions", pa.string()),
    ],
    metadata={"ghostnet_pipeline.table": "runs"},
)

# The channel_stats view: the table's per-shard sums added up per run.
CHANNEL_STATS_VIEW = pa.schema([f for f in CHANNEL_STATS if f.name not in ("shard", "sum", "sum_sq")],
                               metadata=CHANNEL_STATS.metadata)

CHANNEL_DRIFT = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("previous_run_id", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("weights_sha256", pa.string(), nullable=False),
        pa.field("layer", pa.string(), nullable=False),
        pa.field("channels", pa.int64(), nullable=False),
        pa.field("js_divergence", pa.float64()),
        pa.field("cosine_distance", pa.float64()),
        pa.field("shifted", pa.bool_()),
    ],
    metadata={"ghostnet_pipeline.table": "channel_drift"},
)

LABEL_DRIFT = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("previous_run_id", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("weights_sha256", pa.string(), nullable=False),
        pa.field("labels", pa.int64(), nullable=False),
        pa.field("previous_labels", pa.int64(), nullable=False),
        pa.field("label_js_divergence", pa.float64()),
        pa.field("score_js_divergence", pa.float64()),
        pa.field("shifted", pa.bool_()),
    ],
    metadata={"ghostnet_pipeline.table": "label_drift"},
)

DESCRIPTIONS: dict[str, dict[str, str]] = {
    "runs": {
        "run_id": "the run",
        "kind": "`run` (ad hoc) or `nightly`",
        "run_date": "the partition the run wrote into",
        "status": "`running`, `committed` (every shard) or `failed` (its committed shards stay)",
        "committed_at": "when the run ended (UTC); null while it runs",
        "model": "the model architecture name",
        "weights": "the weights URI (credentials redacted) or `random`",
        "weights_sha256": "sha256 of the weights file (or `random-seed-N`)",
        "modality": ", ".join(f"`{m}`" for m in Modality) + " or `auto`",
        "labels": "number of classes of the model head",
        "inputs": "the input URIs (credentials redacted)",
        "items_listed": "items the inputs held",
        "items_skipped": "items already labeled by this model and weights, not labeled again",
        "items": "items this run labeled",
        "rows": "rows this run wrote",
        **{f"rows_{s}": f"rows with status `{s}`" for s in STATUSES},
        "top_errors": "the most frequent (status, error) pairs with a count and one example uri",
        "plan_s": "seconds spent diffing the listing against the tables and cutting shards",
        "inference_s": "seconds from scheduling to the last shard committed",
        "total_s": "seconds from start to end",
        "items_per_s": "items labeled per second of inference",
        "listing_s": "seconds listing the inputs",
        "fetch_s": "seconds of work fetching item bytes, summed over the decode tasks' threads",
        "decode_s": "seconds of work decoding (on the model actors' device too, with device decoding), summed"
        " over the workers",
        "model_s": "seconds the model actors spent running batches (besides device decoding), summed over them",
        "write_s": "seconds of work writing prediction files, summed over the write tasks",
        "commit_s": "seconds the driver spent committing shards",
        "model_actors": "model actors of the run",
        "model_busy": "share (0..1) of the inference time the model actors spent running batches",
        "bound": "the stage that limited the run: `model` when the actors were busy at least 80% of the"
        " time, else the stage among fetch, decode, write and commit with the most seconds",
        "shard_size": "the run's --shard-size",
        "shards_total": "shards with items to label",
        "shards_committed": "shards committed",
        "conflicts": "shards whose items another run labeled first (planned again)",
        "prediction_files": "number of prediction files the run committed",
        "not_items": "objects of the inputs that are not items (no row), by extension, as JSON",
        "error": "why the run failed, or what it says when there was nothing to do",
        "started_at": "when the run started (UTC)",
        "config": "the run's settings, as JSON",
        "versions": "package versions the run used, as JSON",
    },
    "channel_drift": {
        "run_id": "the run",
        "previous_run_id": "the previous committed run of the same model and weights with channel statistics",
        "model": "the model architecture name",
        "weights_sha256": "sha256 of the weights file",
        "layer": "SE gate or DFC attention layer name",
        "channels": "channels in the layer",
        "js_divergence": "Jensen-Shannon divergence (bits, 0..1) between the two runs' per-channel mean"
        " gate vectors, each normalized to sum 1",
        "cosine_distance": "1 - cosine similarity of the two per-channel mean gate vectors",
        "shifted": f"js_divergence > {JS_SHIFT_BITS}",
    },
    "label_drift": {
        "run_id": "the run",
        "previous_run_id": "the previous committed run of the same model and weights with ok rows",
        "model": "the model architecture name",
        "weights_sha256": "sha256 of the weights file",
        "labels": "distinct top-1 labels among the run's ok rows",
        "previous_labels": "distinct top-1 labels among the previous run's ok rows",
        "label_js_divergence": "Jensen-Shannon divergence (bits, 0..1) between the two runs' top-1 label"
        " distributions (ok rows)",
        "score_js_divergence": "Jensen-Shannon divergence (bits, 0..1) between the two runs' top-1 score"
        " histograms (20 bins over 0..1)",
        "shifted": f"label_js_divergence > {LABEL_SHIFT_BITS}",
    },
}


@dataclass(frozen=True)
class LayerDrift:
    js_divergence: float | None
    cosine_distance: float | None
    shifted: bool | None


def layer_drift(
    previous: Sequence[float], current: Sequence[float], *, threshold: float = JS_SHIFT_BITS
) -> LayerDrift:
    """How far one layer's channel weights moved between two runs.

    Each argument is the layer's per-channel mean gate value (``channel_stats.mean``, by
    channel). Both vectors are normalized to sum 1, so they describe which channels the
    layer emphasizes, not how strongly it gates overall; the Jensen-Shannon divergence
    between them is in bits (0 = identical, 1 = disjoint). The cosine distance of the raw
    vectors is given beside it.

    Example:
        >>> layer_drift([0.5, 0.5], [0.5, 0.5]).js_divergence
        0.0

    Returns:
        All ``None`` when the vectors differ in length, are empty or all zero, or hold
        negative values or NaN: there is no distribution to compare.
    """
    p = np.asarray(previous, dtype=np.float64)
    q = np.asarray(current, dtype=np.float64)
    valid = p.shape == q.shape and p.size > 0 and np.all(p >= 0) and np.all(q >= 0)
    if not valid or p.sum() == 0 or q.sum() == 0:
        return LayerDrift(None, None, None)
    js = _js_bits(p / p.sum(), q / q.sum())
    return LayerDrift(js, _cosine_distance(p, q), js > threshold)


def _js_bits(p: np.ndarray, q: np.ndarray) -> float:
    m = (p + q) / 2
    return float(max(0.0, (_kl_bits(p, m) + _kl_bits(q, m)) / 2))


def _kl_bits(p: np.ndarray, m: np.ndarray) -> float:
    nonzero = p > 0  # 0 * log(0 / m) is 0; m > 0 wherever p > 0
    return float(np.sum(p[nonzero] * np.log2(p[nonzero] / m[nonzero])))


def _cosine_distance(p: np.ndarray, q: np.ndarray) -> float:
    similarity = float(p @ q) / (np.linalg.norm(p) * np.linalg.norm(q))
    return float(np.clip(1.0 - similarity, 0.0, 1.0))  # rounding can step just outside [0, 1]


def distribution_js(previous: dict[str, int] | Sequence[int], current: dict[str, int] | Sequence[int]) -> float | None:
    """Jensen-Shannon divergence in bits between two count distributions, by key (dicts, missing keys
    count 0) or by position (sequences of the same length); None when either has no counts."""
    if isinstance(previous, dict) and isinstance(current, dict):
        keys = sorted(set(previous) | set(current))
        p = np.asarray([previous.get(k, 0) for k in keys], np.float64)
        q = np.asarray([current.get(k, 0) for k in keys], np.float64)
    else:
        p, q = np.asarray(previous, np.float64), np.asarray(current, np.float64)
    if p.shape != q.shape or p.sum() <= 0 or q.sum() <= 0:
        return None
    return _js_bits(p / p.sum(), q / q.sum())


def label_drift_table(records: Sequence[RunRecord]) -> pa.Table:
    """:data:`LABEL_DRIFT` rows: each committed run with ok rows against the previous such run of the
    same model and weights, in the order they committed."""
    ordered = sorted((r for r in records if r.committed and r.label_counts),
                     key=lambda r: (r.finished_at or "", r.run_id))
    latest: dict[tuple[str, str], RunRecord] = {}
    rows = []
    for record in ordered:
        key = (record.model, record.weights_sha256)
        previous = latest.get(key)
        latest[key] = record
        if previous is None:
            continue
        label_js = distribution_js(previous.label_counts, record.label_counts)
        rows.append({
            "run_id": record.run_id, "previous_run_id": previous.run_id, "model": record.model,
            "weights_sha256": record.weights_sha256, "labels": len(record.label_counts),
            "previous_labels": len(previous.label_counts), "label_js_divergence": label_js,
            "score_js_divergence": distribution_js(previous.score_histogram, record.score_histogram),
            "shifted": None if label_js is None else label_js > LABEL_SHIFT_BITS,
        })
    return pa.Table.from_pylist(rows, schema=LABEL_DRIFT)


@dataclass(frozen=True)
class RunDrift:
    """How far one run moved from the previous committed run of its model and weights."""

    previous_run_id: str | None
    label_js: float | None  # bits, top-1 label distribution
    channel_js: float | None  # bits, the largest of its layers'


def run_drift(output: str, run_id: str) -> RunDrift:
    """The label and channel drift of ``run_id`` (None where there is nothing to compare with)."""
    con = connect(output)
    try:
        label = _one_row(con, "SELECT previous_run_id, label_js_divergence FROM label_drift WHERE run_id = ?", run_id)
        channel = _one_row(con, "SELECT any_value(previous_run_id) AS previous_run_id, max(js_divergence) AS "
                           "js_divergence FROM channel_drift WHERE run_id = ?", run_id)
    finally:
        con.close()
    return RunDrift(label.get("previous_run_id") or channel.get("previous_run_id"), label.get("label_js_divergence"),
                    channel.get("js_divergence"))


def _one_row(con: duckdb.DuckDBPyConnection, sql: str, *params: object) -> dict[str, Any]:
    """The query's first row by column name; empty when it has none."""
    row = con.execute(sql, list(params)).fetchone()
    names = [column[0] for column in con.description or ()]
    return dict(zip(names, row, strict=True)) if row is not None else {}


def runs_table(records: Sequence[RunRecord]) -> pa.Table:
    """Run records flattened into :data:`RUNS` rows."""
    return pa.Table.from_pylist([_run_row(r) for r in records], schema=RUNS)


_COPIED = ("run_id", "kind", "status", "model", "weights", "weights_sha256", "modality", "labels", "inputs",
           "items_listed", "items_skipped", "items", "rows", "top_errors", "items_per_s", "shard_size",
           "shards_total", "shards_committed", "conflicts", "error")


def _run_row(record: RunRecord) -> dict[str, Any]:
    per_status = record.rows_per_status
    ended = record.finished_at if record.status != "running" else None
    return {
        **{k: getattr(record, k) for k in _COPIED},
        "run_date": date.fromisoformat(record.run_date) if record.run_date else None,
        "committed_at": datetime.fromisoformat(ended) if ended else None,
        "started_at": datetime.fromisoformat(record.started_at),
        **{f"rows_{s}": int(per_status.get(s, 0)) for s in STATUSES},
        **{name: record.timings.get(name) for name in TIMINGS},
        **{name: record.stage_seconds.get(name.removesuffix("_s")) for name in STAGE_COLUMNS},
        "model_actors": record.model_actors or None,
        "model_busy": record.model_busy,
        "bound": record.bound,
        "prediction_files": sum(s.files for s in record.shards),
        "not_items": json.dumps(record.not_items, sort_keys=True),
        "config": json.dumps(record.config, sort_keys=True),
        "versions": json.dumps(record.versions, sort_keys=True),
    }


def connect(output: str) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the views of :data:`VIEWS` over ``output``.

    Use it from Python when the ``query`` subcommand is not enough; the connection holds
    no state beyond the views, so open one per output.

    Example:
        >>> con = connect("s3://labels/photos")  # doctest: +SKIP
        >>> con.sql("SELECT status, count(*) FROM predictions GROUP BY ALL").fetchall()  # doctest: +SKIP

    Args:
        output: the output root the runs wrote to (local path or fsspec URI).

    Raises:
        UsageError: ``output`` does not exist.
    """
    fs, path = storage.filesystem(output)
    if not storage.with_retries(lambda: fs.exists(path)):
        raise UsageError(f"output {storage.redact_uri(output)} does not exist; check the path or URI")
    layout = OutputLayout.of(output)
    duckdb, types = require("duckdb"), require("duckdb.sqltypes")
    double, boolean = types.DOUBLE, types.BOOLEAN
    con: DuckDBPyConnection = duckdb.connect()
    found = records.load_all(layout.runs)
    con.register("runs", runs_table(found))
    con.register("label_drift", label_drift_table(found))
    _register_table(con, "predictions", layout)
    _register_table(con, "_channel_stats_shards", layout)
    con.execute(_CHANNEL_STATS_SQL)
    con.create_function(
        "_layer_drift", _drift_udf, [duckdb.list_type(double), duckdb.list_type(double)],
        duckdb.struct_type({"js_divergence": double, "cosine_distance": double, "shifted": boolean}),
    )
    con.execute(_CHANNEL_DRIFT_SQL)
    return con


def _register_table(con: duckdb.DuckDBPyConnection, view: str, layout: OutputLayout) -> None:
    name = view.removeprefix("_").removesuffix("_shards")
    uri = layout.table(name)
    table = open_table(uri, name)
    dataset = (table.to_pyarrow_dataset(filesystem=storage.arrow_filesystem(uri)) if table is not None
               else table_schema(name).empty_table())
    con.register(view, dataset)


# The per-shard sums of channel_stats added up per run; files adopted from the old layout hold a
# run's mean and std instead of sums, from which the sums follow.
_CHANNEL_STATS_SQL = """
CREATE VIEW channel_stats AS
WITH totals AS (
    SELECT run_id, any_value(model) AS model, any_value(weights_sha256) AS weights_sha256, layer, channel,
           sum(count) AS count,
           sum(coalesce(sum, mean * count)) AS total,
           sum(coalesce(sum_sq, (std * std + mean * mean) * count)) AS total_sq,
           min(min) AS min, max(max) AS max, any_value(run_date) AS run_date
    FROM _channel_stats_shards
    GROUP BY run_id, layer, channel
)
SELECT run_id, model, weights_sha256, layer, channel, CAST(count AS BIGINT) AS count,
       total / count AS mean, sqrt(greatest(total_sq / count - (total / count) ^ 2, 0)) AS std,
       min, max, run_date
FROM totals
"""


def query(output: str, sql: str, *, model_a: str | ModelIdentity | None = None,
          model_b: str | ModelIdentity | None = None) -> QueryResult:
    """Run ``sql`` against the views of ``output``; a statement without a result gives no rows.

    ``model_agreement`` is there when the SQL names it: it compares ``model_a`` with ``model_b``
    (``NAME`` or ``NAME@DIGEST``, a prefix of the weights sha256), or, where they are left out, the
    output's only two (model, weights).

    Raises:
        UsageError: the SQL names ``model_agreement`` (or a model is given) and the two models to
            compare are not clear (:func:`analytics.agreement.pick`).
        duckdb.ProgrammingError: the SQL does not parse or names unknown tables or columns.
        duckdb.Error: anything else DuckDB refused (unreadable files, conversions).
    """
    con = connect(output)
    try:
        if model_a is not None or model_b is not None or agreement.VIEW in con.get_table_names(sql):
            agreement.create_view(con, model_a, model_b)
        relation = con.sql(sql)
        if relation is None:
            return QueryResult([], [])
        return QueryResult(list(relation.columns), relation.fetchall())
    finally:
        con.close()


def _drift_udf(previous: list[float | None], current: list[float | None]) -> dict[str, float | bool | None]:
    drift = layer_drift(
        [math.nan if v is None else v for v in previous], [math.nan if v is None else v for v in current]
    )
    return {"js_divergence": drift.js_divergence, "cosine_distance": drift.cosine_distance,
            "shifted": drift.shifted}


# Each run is paired with the latest earlier run of the same model and weights that has channel
# statistics (a run whose items all failed has none and is skipped), then compared layer by layer.
_CHANNEL_DRIFT_SQL = """
CREATE VIEW channel_drift AS
WITH vectors AS (
    SELECT run_id, layer, list(mean ORDER BY channel) AS means
    FROM channel_stats
    GROUP BY run_id, layer
),
paired AS (
    SELECT run_id, model, weights_sha256,
           lag(run_id) OVER (PARTITION BY model, weights_sha256 ORDER BY committed_at, run_id)
               AS previous_run_id
    FROM runs
    WHERE status = 'committed' AND run_id IN (SELECT DISTINCT run_id FROM channel_stats)
),
scored AS (
    SELECT paired.run_id, paired.previous_run_id, paired.model, paired.weights_sha256,
           cur.layer, len(cur.means) AS channels, _layer_drift(prev.means, cur.means) AS drift
    FROM paired
    JOIN vectors AS cur ON cur.run_id = paired.run_id
    JOIN vectors AS prev ON prev.run_id = paired.previous_run_id AND prev.layer = cur.layer
)
SELECT run_id, previous_run_id, model, weights_sha256, layer, CAST(channels AS BIGINT) AS channels,
       drift.js_divergence AS js_divergence, drift.cosine_distance AS cosine_distance,
       drift.shifted AS shifted
FROM scored
"""
