"""The output contract: every column an output consumer can rely on, in one place.

``OUTPUT/predictions/run_date=YYYY-MM-DD/<run_id>-<n>.parquet`` holds one row per image
(or per audio window) with :data:`PREDICTIONS`; ``OUTPUT/channel_stats/run_date=.../`` holds
one row per (run, layer, channel) with :data:`CHANNEL_STATS`. ``run_date`` is the hive
partition and lives in the directory name, not in the files.
"""

from __future__ import annotations

import enum

import pyarrow as pa


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

CHANNEL_STATS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("weights_sha256", pa.string(), nullable=False),
        pa.field("layer", pa.string(), nullable=False),
        pa.field("channel", pa.int32(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),
        pa.field("mean", pa.float64()),
        pa.field("std", pa.float64()),
        pa.field("min", pa.float32()),
        pa.field("max", pa.float32()),
    ],
    metadata={"ghostnet_pipeline.table": "channel_stats"},
)

# Per-batch partial sums written by the model actors and reduced at commit into CHANNEL_STATS.
CHANNEL_PARTIALS = pa.schema(
    [
        pa.field("layer", pa.string(), nullable=False),
        pa.field("channel", pa.int32(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),
        pa.field("sum", pa.float64(), nullable=False),
        pa.field("sum_sq", pa.float64(), nullable=False),
        pa.field("min", pa.float32(), nullable=False),
        pa.field("max", pa.float32(), nullable=False),
    ]
)

PARTITION = "run_date"

DESCRIPTIONS: dict[str, dict[str, str]] = {
    "predictions": {
        "uri": "the input object, as listed (scheme included)",
        "etag": "the object's ETag (or a content fingerprint for local files) at listing time",
        "size_bytes": "the object's size at listing time",
        "modality": "`image` or `audio`",
        "segment": "audio window index 0..n-1; 0 for images",
        "start_s": "audio window start in seconds; null for images",
        "end_s": "audio window end in seconds; null for images",
        "status": "one of " + ", ".join(f"`{s}`" for s in STATUSES),
        "error": "why, when status is not `ok`",
        "label": "top-1 label",
        "score": "top-1 softmax probability",
        "topk_ids": "top-k class indices, best first",
        "topk_labels": "top-k labels, best first",
        "topk_scores": "top-k softmax probabilities, best first",
        "embedding": "pooled pre-logits features (1280 floats) when the run asked for them",
        "channel_weights": "per SE gate / DFC attention layer: mean, std, min, max and entropy"
        " (nats, of the gates normalized to sum 1) over that layer's channels, for this item",
        "model": "the model architecture name (timm naming)",
        "weights_sha256": "sha256 of the weights file (or `random-seed-N`)",
        "run_id": "the run that wrote the row; committed runs are listed in `_runs/`",
        "processed_at": "when the row was produced (UTC)",
        "run_date": "hive partition: the run's date",
    },
    "channel_stats": {
        "run_id": "the run",
        "model": "the model architecture name",
        "weights_sha256": "sha256 of the weights file",
        "layer": "SE gate or DFC attention layer name",
        "channel": "channel index within the layer",
        "count": "number of `ok` items (or audio windows) aggregated",
        "mean": "mean gate value over those items",
        "std": "population standard deviation of the gate value",
        "min": "smallest gate value seen",
        "max": "largest gate value seen",
        "run_date": "hive partition: the run's date",
    },
}
