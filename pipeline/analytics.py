"""SQL over one output with DuckDB, showing committed runs only.

:func:`connect` opens an in-memory DuckDB connection with four views:

- ``predictions``: the rows of committed runs (the files their commit records list), plus
  the ``run_date`` partition;
- ``channel_stats``: the per-(run, layer, channel) statistics of committed runs, plus ``run_date``;
- ``runs``: one row per commit record, flattened (:data:`RUNS`);
- ``channel_drift``: per layer, each run against the previous committed run of the same model
  and weights (:data:`CHANNEL_DRIFT`, distances from :func:`layer_drift`).

Files in ``_staging/`` and files under ``predictions/`` whose run has no commit record are
never read. Local outputs are read by DuckDB directly; any other fsspec URI (``s3://...``) goes
through the fsspec filesystem registered with the connection, since DuckDB's httpfs extension
is not assumed to be installed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import duckdb
import numpy as np
import pyarrow as pa
from duckdb.sqltypes import BOOLEAN, DOUBLE

from pipeline import storage
from pipeline.commit import Layout, committed_runs
from pipeline.schema import CHANNEL_STATS, PARTITION, PREDICTIONS, STATUSES

__all__ = [
    "CHANNEL_DRIFT",
    "JS_SHIFT_BITS",
    "RUNS",
    "TIMINGS",
    "VIEWS",
    "LayerDrift",
    "QueryResult",
    "connect",
    "layer_drift",
    "query",
    "runs_table",
]

VIEWS = ("predictions", "channel_stats", "runs", "channel_drift")

# A layer has shifted when the Jensen-Shannon divergence between its normalized channel-mean
# vectors exceeds this many bits. Chosen from measurements recorded in docs/analytics.md.
JS_SHIFT_BITS = 0.001

TIMINGS = ("discover_s", "model_check_s", "inference_s", "commit_s")

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
        pa.field("prediction_files", pa.int64()),
        pa.field("config", pa.string()),
        pa.field("versions", pa.string()),
    ],
    metadata={"ghostnet_pipeline.table": "runs"},
)

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

DESCRIPTIONS: dict[str, dict[str, str]] = {
    "runs": {
        "run_id": "the run",
        "kind": "`run` (ad hoc) or `nightly`",
        "run_date": "the partition the run wrote into",
        "status": "`committed`",
        "committed_at": "when the commit record was written (UTC)",
        "model": "the model architecture name",
        "weights": "the weights URI (credentials redacted) or `random`",
        "weights_sha256": "sha256 of the weights file (or `random-seed-N`)",
        "modality": "`image`, `audio` or `auto`",
        "labels": "number of classes of the model head",
        "inputs": "the input URIs (credentials redacted)",
        "items_listed": "items the inputs held",
        "items_skipped": "items already labeled by this model and weights, not labeled again",
        "items": "items this run labeled",
        "rows": "rows this run wrote",
        **{f"rows_{s}": f"rows with status `{s}`" for s in STATUSES},
        "top_errors": "the most frequent (status, error) pairs with a count and one example uri",
        "discover_s": "seconds spent listing the inputs",
        "model_check_s": "seconds spent checking the weights on the driver",
        "inference_s": "seconds from scheduling to the last staged row",
        "commit_s": "seconds spent checking and publishing (null when the record does not hold it)",
        "items_per_s": "items labeled per second of inference",
        "prediction_files": "number of prediction files the run published",
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
    return float(min(1.0, max(0.0, 1.0 - similarity)))  # rounding can step just outside [0, 1]


def runs_table(records: Sequence[dict]) -> pa.Table:
    """Commit records flattened into :data:`RUNS` rows (missing keys become nulls)."""
    return pa.Table.from_pylist([_run_row(r) for r in records], schema=RUNS)


_COPIED = ("run_id", "kind", "status", "model", "weights", "weights_sha256", "modality", "labels", "inputs",
           "items_listed", "items_skipped", "items", "rows", "top_errors", "items_per_s")


def _run_row(record: dict) -> dict:
    per_status = record.get("rows_per_status") or {}
    timings = record.get("timings") or {}
    return {
        **{k: record.get(k) for k in _COPIED},
        "run_date": date.fromisoformat(record["run_date"]) if record.get("run_date") else None,
        "committed_at": (datetime.fromisoformat(record["committed_at"])
                         if record.get("committed_at") else None),
        **{f"rows_{s}": int(per_status.get(s, 0)) for s in STATUSES},
        **{name: timings.get(name) for name in TIMINGS},
        "prediction_files": len((record.get("files") or {}).get("predictions", [])),
        "config": json.dumps(record.get("config"), sort_keys=True) if "config" in record else None,
        "versions": json.dumps(record.get("versions"), sort_keys=True) if "versions" in record else None,
    }


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple]


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
        FileNotFoundError: ``output`` does not exist.
    """
    fs, path = storage.filesystem(output)
    if not storage.with_retries(lambda: fs.exists(path)):
        raise FileNotFoundError(f"output {storage.redact_uri(output)} does not exist")
    root = storage.to_uri(fs, path.rstrip("/"))
    con = duckdb.connect()
    if not storage.is_local(fs):
        con.register_filesystem(fs)
    records = committed_runs(Layout(root))
    con.register("runs", runs_table(records))
    _create_file_view(con, "predictions", PREDICTIONS, _committed_files(records, "predictions", root))
    _create_file_view(con, "channel_stats", CHANNEL_STATS, _committed_files(records, "channel_stats", root))
    con.create_function(
        "_layer_drift", _drift_udf, [duckdb.list_type(DOUBLE), duckdb.list_type(DOUBLE)],
        duckdb.struct_type({"js_divergence": DOUBLE, "cosine_distance": DOUBLE, "shifted": BOOLEAN}),
    )
    con.execute(_CHANNEL_DRIFT_SQL)
    return con


def query(output: str, sql: str) -> QueryResult:
    """Run ``sql`` against the views of ``output``; a statement without a result gives no rows.

    Raises:
        duckdb.ProgrammingError: the SQL does not parse or names unknown tables or columns.
        duckdb.Error: anything else DuckDB refused (unreadable files, conversions).
    """
    con = connect(output)
    try:
        relation = con.sql(sql)
        if relation is None:
            return QueryResult([], [])
        return QueryResult(list(relation.columns), relation.fetchall())
    finally:
        con.close()


def _committed_files(records: Sequence[dict], table: str, root: str) -> list[str]:
    # A record holds the URIs its run wrote; the output may since have been moved or be
    # spelled differently (relative path, s3a://), so only the part below the root is kept.
    return [
        storage.join(root, *uri.rsplit("/", 3)[-3:])
        for record in records
        for uri in (record.get("files") or {}).get(table, [])
    ]


def _create_file_view(
    con: duckdb.DuckDBPyConnection, name: str, schema: pa.Schema, files: list[str]
) -> None:
    if not files:
        con.register(name, schema.append(pa.field(PARTITION, pa.date32())).empty_table())
        return
    listed = ", ".join(_sql_string(f) for f in files)
    con.execute(
        f"CREATE VIEW {name} AS SELECT * FROM read_parquet([{listed}], hive_partitioning = true, "
        f"hive_types = {{'{PARTITION}': DATE}}, union_by_name = true)"
    )


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _drift_udf(previous: list[float | None], current: list[float | None]) -> dict:
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
    WHERE run_id IN (SELECT DISTINCT run_id FROM channel_stats)
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
