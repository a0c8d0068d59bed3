"""The write stage: prediction rows become Parquet files in the table's folder, one file per shard
present in a batch, and a manifest row per file goes back to the driver, which commits them.

Files are immutable (:mod:`pipeline.files`): a retried task writes a new file under a name of its
own, and only the manifests of the task that succeeded reach the driver, so only its files are
committed; what a failed try left is deleted with the attempt's other uncommitted files. Nothing
is visible to readers of the Delta table until the driver commits the shard.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import channel_stats, files
from pipeline.metrics import Reporter
from pipeline.schema import LAST, PARTIALS, PREDICTIONS, SHARD
from pipeline.tables import FileStats

__all__ = ["MANIFEST", "write_files"]

# One row per written data file, back to the driver.
MANIFEST = pa.schema(
    [
        pa.field("shard", pa.int32()),
        pa.field("path", pa.string()),  # relative to the predictions table
        pa.field("size", pa.int64()),
        pa.field("rows", pa.int64()),
        pa.field("items_done", pa.int64()),  # items whose last row is in this file
        pa.field("rows_expected", pa.int64()),  # rows those items have in all (audio: windows)
        pa.field("stats", pa.string()),  # Delta file statistics, JSON
        pa.field("partials", pa.binary()),  # channel partials of this file's ok rows
    ]
)


def write_files(batch: pa.Table, *, table_uri: str, run_id: str, attempt: str, run_date: str,
                digests: Mapping[int, str], row_group_size: int, reporter: Reporter | None = None) -> pa.Table:
    """Write ``batch`` (rows of :data:`pipeline.rows.ROWS`), split by shard, as new files of
    ``attempt``; return the manifests. ``digests`` are the shards' (the plan's); ``reporter`` gets
    the seconds it took."""
    started = time.perf_counter()
    manifests = []
    shards = batch[SHARD].to_numpy()
    for shard in np.unique(shards):
        rows = batch.filter(pa.array(shards == shard))
        written = files.write_parquet(
            table_uri, rows.select(PREDICTIONS.names).cast(PREDICTIONS), run_id=run_id, attempt=attempt,
            run_date=run_date, shard=int(shard), digest=digests[int(shard)], row_group_size=row_group_size)
        manifests.append(_manifest(rows, int(shard), written))
    if reporter is not None:
        reporter.stage("write", time.perf_counter() - started)
    return pa.Table.from_pylist(manifests, schema=MANIFEST)


def _manifest(rows: pa.Table, shard: int, written: FileStats) -> dict[str, Any]:
    last = rows.filter(rows[LAST])
    blobs = [b for b in rows[PARTIALS].to_pylist() if b is not None]
    return {
        "shard": shard,
        "path": written.path,
        "size": written.size,
        "rows": rows.num_rows,
        "items_done": last.num_rows,
        "rows_expected": int(pc.sum(pc.add(pc.cast(last["segment"], pa.int64()), 1)).as_py() or 0),
        "stats": written.stats,
        "partials": channel_stats.to_bytes(channel_stats.add(channel_stats.from_bytes(b) for b in blobs)),
    }
