"""The output contract, and the columns that flow between the stages, in one place.

``OUTPUT/predictions`` (a Delta Lake table, partitioned by ``run_date``) holds one row per image,
or per audio window, with :data:`PREDICTIONS`; ``OUTPUT/channel_stats`` holds per-shard
channel-weight sums with :data:`CHANNEL_STATS`. ``run_date`` is the partition column: Delta
keeps it in the transaction log and the directory name, not in the data files.

Between the stages, rows carry the item columns (:data:`ITEMS`) and a few internal ones whose
names start with ``_``; those never reach an output file.
"""

from __future__ import annotations

import enum

import pyarrow as pa

from pipeline.kinds import Modality

__all__ = [
    "CHANNEL_PARTIALS",
    "CHANNEL_STATS",
    "CHANNEL_WEIGHT",
    "DECODED",
    "DESCRIPTIONS",
    "GROUP",
    "ITEMS",
    "KEYS",
    "LAST",
    "MODELS",
    "PARTIALS",
    "PARTITION",
    "PREDICTIONS",
    "SHARD",
    "STATUSES",
    "Status",
]


class Status(str, enum.Enum):
    """What happened to one input item. Every item gets exactly one of these."""

    OK = "ok"
    READ_ERROR = "read_error"  # the object could not be fetched (missing, denied, network)
    DECODE_ERROR = "decode_error"  # bytes were read but are not a valid image or sound
    UNSUPPORTED = "unsupported"  # a valid file of a kind this model cannot take
    TOO_LARGE = "too_large"  # refused before allocation (decompression bomb, huge input)
    EMPTY = "empty"  # zero bytes, or no samples
    MODEL_ERROR = "model_error"  # the model raised on this item

    def __str__(self) -> str:
        return self.value


STATUSES: tuple[str, ...] = tuple(s.value for s in Status)

PARTITION = "run_date"

# The key of a labeled object version: the diff of a run skips listed items whose key is labeled.
KEYS = pa.schema([pa.field("uri", pa.string()), pa.field("etag", pa.string()), pa.field("size_bytes", pa.int64())])

# One listed item: what discovery finds and every stage carries along.
ITEMS = pa.schema([*KEYS, pa.field("modality", pa.string())])

# Internal columns between stages (never written).
SHARD = "_shard"  # int32: the shard of the run the row belongs to
LAST = "_last"  # bool: the row is its item's last (images: every row; audio: the last window)
PARTIALS = "_partials"  # binary: the batch's CHANNEL_PARTIALS for the row's shard, on one row
MODELS = "_models"  # int32: bit i set when the run's model i labels the item (the plan's per-model diff)
GROUP = "_group"  # int32: the decode group (a distinct preprocessing) whose input the row carries

# What the decode stages (images and audio) hand to the model stage: one row per output row.
DECODED = pa.schema(
    [
        *ITEMS,
        pa.field("segment", pa.int32()),
        pa.field("start_s", pa.float32()),
        pa.field("end_s", pa.float32()),
        pa.field("status", pa.string()),
        pa.field("error", pa.string()),
        pa.field("encoding", pa.string()),  # raw (uint8 crop or float32 waveform), jpeg, or null: not decoded
        pa.field("encoded", pa.binary()),
        pa.field(SHARD, pa.int32()),
        pa.field(LAST, pa.bool_()),
        pa.field(MODELS, pa.int32()),
        pa.field(GROUP, pa.int32()),
    ]
)

CHANNEL_WEIGHT = pa.struct(
    [
        pa.field("layer", pa.string()),
        pa.field("mean", pa.float32()),
        pa.field("std", pa.float32()),
        pa.field("min", pa.float32()),
        pa.field("max", pa.float32()),
        pa.field("entropy", pa.float32()),
    ]
)

PREDICTIONS = pa.schema(
    [
        pa.field("uri", pa.string(), nullable=False),
        pa.field("etag", pa.string()),
        pa.field("size_bytes", pa.int64()),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("segment", pa.int32(), nullable=False),
        pa.field("start_s", pa.float32()),
        pa.field("end_s", pa.float32()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("label", pa.string()),
        pa.field("score", pa.float32()),
        pa.field("topk_ids", pa.list_(pa.int32())),
        pa.field("topk_labels", pa.list_(pa.string())),
        pa.field("topk_scores", pa.list_(pa.float32())),
        pa.field("embedding", pa.list_(pa.float32())),
        pa.field("channel_weights", pa.list_(CHANNEL_WEIGHT)),
        pa.field("model", pa.string(), nullable=False),
        pa.field("weights_sha256", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("processed_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={"ghostnet_pipeline.table": "predictions"},
)

# Per (run, shard, layer, channel) sums: reducible to per-run statistics by adding them up.
# Files adopted from the old layout (one per run, by `migrate`) hold mean and std, no sums and
# no shard; the views read both.
CHANNEL_STATS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("shard", pa.int32()),
        pa.field("model", pa.string(), nullable=False),
        pa.field("weights_sha256", pa.string(), nullable=False),
        pa.field("layer", pa.string(), nullable=False),
        pa.field("channel", pa.int32(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),
        pa.field("sum", pa.float64()),
        pa.field("sum_sq", pa.float64()),
        pa.field("mean", pa.float64()),
        pa.field("std", pa.float64()),
        pa.field("min", pa.float32()),
        pa.field("max", pa.float32()),
    ],
    metadata={"ghostnet_pipeline.table": "channel_stats"},
)

# Per-batch partial sums, made by the model actors and added up per (shard, model) at commit;
# ``model`` is the model's position among the run's models.
CHANNEL_PARTIALS = pa.schema(
    [
        pa.field("model", pa.int32(), nullable=False),
        pa.field("layer", pa.string(), nullable=False),
        pa.field("channel", pa.int32(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),
        pa.field("sum", pa.float64(), nullable=False),
        pa.field("sum_sq", pa.float64(), nullable=False),
        pa.field("min", pa.float32(), nullable=False),
        pa.field("max", pa.float32(), nullable=False),
    ]
)

DESCRIPTIONS: dict[str, dict[str, str]] = {
    "predictions": {
        "uri": "the input object, as listed (scheme included)",
        "etag": "the object's version at listing time: its ETag on object stores; for local files"
        " `mtime-<ns>`, the modification time (a touched file is labeled again; listing never reads content)",
        "size_bytes": "the object's size at listing time",
        "modality": " or ".join(f"`{m}`" for m in Modality),
        "segment": "audio window index 0..n-1; 0 for images",
        "start_s": "audio window start in seconds; null for images and for audio rows that are not a window",
        "end_s": "audio window end in seconds; null for images and for audio rows that are not a window",
        "status": "one of " + ", ".join(f"`{s}`" for s in STATUSES),
        "error": "why, when status is not `ok`; null when it is",
        "label": "top-1 label; null when status is not `ok`",
        "score": "top-1 softmax probability",
        "topk_ids": "top-k class indices, best first",
        "topk_labels": "top-k labels, best first",
        "topk_scores": "top-k softmax probabilities, best first",
        "embedding": "pooled pre-logits features (1280 floats) when the run asked for them",
        "channel_weights": "per SE gate / DFC attention layer: mean, std, min, max and entropy"
        " (nats, of the gates normalized to sum 1) over that layer's channels, for this item",
        "model": "the model architecture name (timm naming)",
        "weights_sha256": "sha256 of the weights file; for random weights"
        " `random-seed-<N>:<modality>:<classes>x<in_chans>`",
        "run_id": "the run that wrote the row; each run has a record in `_runs/`",
        "processed_at": "when the row was produced (UTC)",
        "run_date": "partition column: the run's date",
    },
    "channel_stats_shards": {
        "run_id": "the run",
        "shard": "the shard of the run (null for runs adopted from the old layout, one row per run)",
        "model": "the model architecture name",
        "weights_sha256": "as in predictions",
        "layer": "SE gate or DFC attention layer name",
        "channel": "channel index within the layer",
        "count": "number of `ok` items (or audio windows) of the shard",
        "sum": "sum of the gate value over those items",
        "sum_sq": "sum of its square",
        "mean": "sum / count",
        "std": "population standard deviation of the gate value over the shard's items",
        "min": "smallest gate value seen",
        "max": "largest gate value seen",
        "run_date": "partition column: the run's date",
    },
    "channel_stats": {
        "run_id": "the run",
        "model": "the model architecture name",
        "weights_sha256": "as in predictions",
        "layer": "SE gate or DFC attention layer name",
        "channel": "channel index within the layer",
        "count": "number of `ok` items (or audio windows) aggregated",
        "mean": "mean gate value over those items",
        "std": "population standard deviation of the gate value",
        "min": "smallest gate value seen",
        "max": "largest gate value seen",
        "run_date": "partition column: the run's date",
    },
}
