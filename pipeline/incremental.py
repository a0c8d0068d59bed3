"""What is already labeled: the anti-join of listed items against committed rows."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from pipeline import storage
from pipeline.commit import Layout, committed_runs

KEY = ["uri", "etag", "size_bytes"]


def labeled(layout: Layout, *, model: str, weights_sha256: str) -> pa.Table:
    """Distinct (uri, etag, size_bytes) that committed runs of this model and weights wrote."""
    files = [
        f
        for record in committed_runs(layout)
        if record.get("model") == model and record.get("weights_sha256") == weights_sha256
        for f in record.get("files", {}).get("predictions", [])
    ]
    if not files:
        return pa.table({"uri": pa.array([], pa.string()), "etag": pa.array([], pa.string()),
                         "size_bytes": pa.array([], pa.int64())})
    fs, _ = storage.filesystem(files[0])
    dataset = pads.dataset([storage.filesystem(f)[1] for f in files], filesystem=fs, format="parquet")
    return dataset.to_table(columns=KEY).group_by(KEY).aggregate([])


def unlabeled(items: pa.Table, done: pa.Table) -> pa.Table:
    """Items that are new or changed (by uri + etag + size) since the committed runs."""
    if done.num_rows == 0:
        return items
    left = _with_join_keys(items)
    right = _with_join_keys(done.select(KEY)).select(["_uri", "_etag", "_size"])
    keys = ["_uri", "_etag", "_size"]
    fresh = left.join(right, keys=keys, join_type="left anti")
    return fresh.drop_columns(keys).sort_by("uri")


def _with_join_keys(table: pa.Table) -> pa.Table:
    # Null never equals null in a join; an object listed without etag/size still matches itself.
    return (
        table.append_column("_uri", table["uri"])
        .append_column("_etag", pc.fill_null(table["etag"], ""))
        .append_column("_size", pc.fill_null(table["size_bytes"], -1))
    )
