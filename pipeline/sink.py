"""The write stage: prediction rows become Parquet files in the table's folder, one file per shard
present in a batch, and a manifest row per file goes back to the driver, which commits them.

A file's name is its run, its shard and a digest of the rows it holds, so a retried task writes
the same name again and overwrites, never adds. Nothing is visible to readers of the Delta table
until the driver commits the shard.
"""

from __future__ import annotations

import hashlib
import io
import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import channel_stats, storage
from pipeline.metrics import Reporter
from pipeline.schema import LAST, PARTIALS, PARTITION, PREDICTIONS, SHARD
from pipeline.tables import FileStats, delta_stats

__all__ = ["MANIFEST", "write_files", "write_predictions"]

# One row per written data file, back to the driver.
MANIFEST = pa.schema(
    [
        pa.field("shard", pa.int32()),
        pa.field("path", pa.string()),  # relative to the predictions table
        pa.field("size", pa.int64()),
        pa.field("rows", pa.int64()),
        pa.field("items_done", pa.int64()),  # items whose last row is in this file
        pa.field("rows_expected", pa.int64()),  # rows those items have in all (audio: windows)
        pa.field("rows_per_status", pa.string()),  # JSON {status: rows}
        pa.field("stats", pa.string()),  # Delta file statistics, JSON
        pa.field("partials", pa.binary()),  # channel partials of this file's ok rows
    ]
)


def write_files(batch: pa.Table, *, table_uri: str, run_id: str, run_date: str, row_group_size: int,
                reporter: Reporter | None = None) -> pa.Table:
    """Write ``batch`` (rows of :data:`pipeline.rows.ROWS`), split by shard; return the manifests.
    ``reporter`` gets the seconds it took."""
    started = time.perf_counter()
    manifests = []
    shards = batch[SHARD].to_numpy()
    for shard in np.unique(shards):
        rows = batch.filter(pa.array(shards == shard))
        manifests.append(_write_shard_file(rows, int(shard), table_uri, run_id, run_date, row_group_size))
    if reporter is not None:
        reporter.stage("write", time.perf_counter() - started)
    return pa.Table.from_pylist(manifests, schema=MANIFEST)


def write_predictions(table_uri: str, data: pa.Table, *, run_id: str, run_date: str, shard: int,
                      row_group_size: int = 50_000) -> FileStats:
    """Write :data:`PREDICTIONS` rows of one shard as a data file of the predictions table (not
    yet committed); the name repeats for the same rows."""
    data = data.select(PREDICTIONS.names).cast(PREDICTIONS)
    relative = f"{PARTITION}={run_date}/{run_id}-{shard:05d}-{_digest(data)}.parquet"
    sink = io.BytesIO()
    pq.write_table(data, sink, row_group_size=row_group_size, compression="zstd")
    storage.write_bytes(storage.join(table_uri, relative), sink.getvalue())
    return FileStats(relative, sink.tell(), data.num_rows, delta_stats(data))


def _write_shard_file(rows: pa.Table, shard: int, table_uri: str, run_id: str, run_date: str,
                      row_group_size: int) -> dict:
    written = write_predictions(table_uri, rows, run_id=run_id, run_date=run_date, shard=shard,
                                row_group_size=row_group_size)
    last = rows.filter(rows[LAST])
    blobs = [b for b in rows[PARTIALS].to_pylist() if b is not None]
    return {
        "shard": shard,
        "path": written.path,
        "size": written.size,
        "rows": rows.num_rows,
        "items_done": last.num_rows,
        "rows_expected": int(pc.sum(pc.add(pc.cast(last["segment"], pa.int64()), 1)).as_py() or 0),
        "rows_per_status": json.dumps({c["values"]: c["counts"] for c in pc.value_counts(rows["status"]).to_pylist()}),
        "stats": written.stats,
        "partials": channel_stats.to_bytes(channel_stats.add(channel_stats.from_bytes(b) for b in blobs)),
    }


def _digest(rows: pa.Table) -> str:
    """Of the rows' (uri, segment) keys, in order: the same rows always get the same file name."""
    keys = pc.binary_join_element_wise(rows["uri"], pc.cast(rows["segment"], pa.string()), "#")
    return hashlib.sha256("\n".join(keys.to_pylist()).encode()).hexdigest()[:16]
