"""The rows between stages: decoded rows (:func:`decoded_rows`, from the decode stages), and
prediction rows, the model stage's outputs scattered back onto its input rows, column by column.

Every input row gives one output row of :data:`pipeline.schema.PREDICTIONS`. The item columns
pass through as Arrow (so a null stays null); rows that reached the model get their top-k, their
embedding and their channel-weight summaries; the others keep their status and error and have
nulls there. The internal columns (shard, last-of-item, channel partials) ride along for the
write stage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa

from pipeline.channel_stats import SUMMARY_STATS
from pipeline.schema import CHANNEL_WEIGHT, DECODED, GROUP, ITEMS, LAST, MODELS, PARTIALS, PREDICTIONS, SHARD

__all__ = ["ROWS", "ModelOutputs", "Provenance", "decoded_rows", "prediction_rows"]

# What the model stage hands to the write stage.
ROWS = pa.schema([*PREDICTIONS, pa.field(SHARD, pa.int32()), pa.field(LAST, pa.bool_()),
                  pa.field(PARTIALS, pa.binary())])

def decoded_rows(items: pa.Table | Mapping[str, Sequence[object] | pa.Array | pa.ChunkedArray],
                 **decoded: object) -> pa.Table:
    """Rows of :data:`DECODED`: each row's item columns (its item's, its shard and its models) taken
    from ``items``, and what decoding found (``segment``, ``start_s``, ``end_s``, ``status``,
    ``error``, ``encoding``, ``encoded``, ``_last`` given as ``last``: the row is the last of its
    item in its group, and ``_group`` given as ``group``: the decode group it was made for)."""
    columns = {name: items[name] for name in (*ITEMS.names, SHARD)}
    n = len(columns[SHARD])
    # Items without a model mask (outside a run's plan: tools, benchmarks) are the first model's.
    names = items.column_names if isinstance(items, pa.Table) else list(items)
    columns[MODELS] = items[MODELS] if MODELS in names else pa.array(np.ones(n, np.int32))
    columns[GROUP] = pa.array(np.zeros(n, np.int32))
    columns |= {LAST if name == "last" else GROUP if name == "group" else name: value
                for name, value in decoded.items()}
    return pa.table({name: columns[name] for name in DECODED.names}, schema=DECODED)


_PASSED_THROUGH = ("uri", "etag", "size_bytes", "modality", "segment", "start_s", "end_s")


@dataclass(frozen=True)
class Provenance:
    """The columns every row of a run carries."""

    model: str
    weights_sha256: str
    run_id: str


@dataclass(frozen=True)
class ModelOutputs:
    """What the model said about the rows that reached it, in ``rows`` order, on the host."""

    rows: np.ndarray  # (m,) indices into the batch
    topk_ids: np.ndarray  # (m, k) int32
    topk_scores: np.ndarray  # (m, k) float32
    embedding: np.ndarray | None  # (m, d) float32
    channel_weights: dict[str, dict[str, np.ndarray]]  # layer -> statistic -> (m,)
    partials: dict[int, bytes] = field(default_factory=dict)  # shard -> its channel partials

    @classmethod
    def none(cls, topk: int) -> ModelOutputs:
        empty = np.zeros(0, dtype=np.int64)
        return cls(empty, np.zeros((0, topk), np.int32), np.zeros((0, topk), np.float32), None, {})


def prediction_rows(
    batch: pa.Table,
    status: list[str],
    error: list[str | None],
    outputs: ModelOutputs,
    *,
    labels: pa.Array,
    provenance: Provenance,
    processed_at: datetime,
) -> pa.Table:
    """One :data:`ROWS` row per row of ``batch``."""
    n = batch.num_rows
    where = _positions(outputs.rows, n)
    k = outputs.topk_ids.shape[1]
    ids = pa.array(outputs.topk_ids.reshape(-1), pa.int32())
    top_labels = labels.take(ids)
    scores = pa.array(outputs.topk_scores.reshape(-1), pa.float32())
    columns = {name: batch[name] for name in _PASSED_THROUGH}
    columns |= {
        "status": pa.array(status, pa.string()),
        "error": pa.array(error, pa.string()),
        "label": top_labels.take(pa.array(np.arange(len(outputs.rows)) * k, pa.int64())).take(where),
        "score": pa.array(outputs.topk_scores[:, 0] if k else [], pa.float32()).take(where),
        "topk_ids": _lists(ids, k).take(where),
        "topk_labels": _lists(top_labels, k).take(where),
        "topk_scores": _lists(scores, k).take(where),
        "embedding": _embedding(outputs.embedding, where, n),
        "channel_weights": _channel_weight_lists(outputs.channel_weights, len(outputs.rows)).take(where),
        "model": pa.array([provenance.model] * n, pa.string()),
        "weights_sha256": pa.array([provenance.weights_sha256] * n, pa.string()),
        "run_id": pa.array([provenance.run_id] * n, pa.string()),
        "processed_at": pa.array([processed_at] * n, pa.timestamp("us", tz="UTC")),
        SHARD: batch[SHARD],
        LAST: batch[LAST],
        PARTIALS: _partials_column(batch[SHARD], outputs.partials),
    }
    return pa.table(columns, schema=ROWS)


def _positions(rows: np.ndarray, n: int) -> pa.Array:
    """For each of ``n`` rows its index among ``rows``, or null: ``take`` then scatters."""
    where = np.full(n, -1, dtype=np.int64)
    where[rows] = np.arange(len(rows))
    return pa.array(where, mask=where < 0)


def _lists(values: pa.Array, width: int) -> pa.ListArray:
    offsets = pa.array(np.arange(0, len(values) + 1, max(width, 1), dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, values)


def _embedding(embedding: np.ndarray | None, where: pa.Array, n: int) -> pa.Array:
    if embedding is None:
        return pa.nulls(n, pa.list_(pa.float32()))
    return _lists(pa.array(embedding.reshape(-1), pa.float32()), embedding.shape[1]).take(where)


def _channel_weight_lists(summaries: dict[str, dict[str, np.ndarray]], items: int) -> pa.Array:
    """list<struct<layer, mean, std, min, max, entropy>> with one list per item, layers in order."""
    layers = list(summaries)
    if not layers:
        return pa.nulls(items, pa.list_(CHANNEL_WEIGHT))
    fields = {"layer": pa.array(np.tile(np.asarray(layers, dtype=object), items), pa.string())}
    for stat in SUMMARY_STATS:
        matrix = np.stack([summaries[layer][stat] for layer in layers], axis=1)
        fields[stat] = pa.array(matrix.reshape(-1).astype(np.float32), pa.float32())
    struct = pa.StructArray.from_arrays(list(fields.values()), fields=list(CHANNEL_WEIGHT))
    return _lists(struct, len(layers))


def _partials_column(shards: pa.ChunkedArray | pa.Array, partials: dict[int, bytes]) -> pa.Array:
    """Each shard's partials on the first of its rows, null elsewhere."""
    values: list[bytes | None] = [None] * len(shards)
    shard_of_row = shards.to_numpy()
    for shard, blob in partials.items():
        values[int(np.flatnonzero(shard_of_row == shard)[0])] = blob
    return pa.array(values, pa.binary())
