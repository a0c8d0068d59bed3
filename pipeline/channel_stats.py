"""Channel-weight statistics: per item, per batch, per shard.

- :func:`per_item` summarizes each item's gates per layer (the ``channel_weights`` column).
- :func:`partials` sums one batch's gates per (model, layer, channel): count, sum, sum of
  squares, min and max; ``model`` is the model's position among the run's models. The model
  actor ships them with the batch's rows (:func:`to_bytes`), so a retried batch brings exactly
  its own sums and no side file can be counted twice.
- :func:`add` adds partials up; :func:`shard_rows` turns a shard's total into
  :data:`pipeline.schema.CHANNEL_STATS` rows, model by model; :func:`check_counts` reconciles one
  model's (:func:`of_model`) with its ``ok`` rows of the shard.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import InternalError
from pipeline.schema import CHANNEL_PARTIALS, CHANNEL_STATS

if TYPE_CHECKING:
    import torch

    from pipeline.model import ModelIdentity

__all__ = ["add", "check_counts", "from_bytes", "of_model", "partials", "per_item", "shard_rows", "to_bytes"]

SUMMARY_STATS = ("mean", "std", "min", "max", "entropy")


def per_item(channel_weights: dict[str, torch.Tensor]) -> dict[str, dict[str, np.ndarray]]:
    """Per item and layer: mean, std, min, max and entropy (nats) of the gates over channels."""
    summaries = {}
    for layer, gates in channel_weights.items():
        g = gates.float()
        p = g / g.sum(dim=1, keepdim=True).clamp_min(1e-12)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(dim=1)
        stats = [g.mean(1), g.std(1, unbiased=False), g.amin(1), g.amax(1), entropy]
        columns = np.stack([s.cpu().numpy() for s in stats], axis=1)
        summaries[layer] = dict(zip(SUMMARY_STATS, columns.T, strict=True))
    return summaries


def partials(channel_weights: dict[str, torch.Tensor], model: int = 0) -> pa.Table:
    """Per layer and channel of the run's model ``model``: count, sum, sum of squares, min and max
    over the given items."""
    layers, channels, counts, sums, sum_sq, mins, maxs = [], [], [], [], [], [], []
    for layer, gates in channel_weights.items():
        g = gates.double()
        width = g.shape[1]
        layers += [layer] * width
        channels.append(np.arange(width, dtype=np.int32))
        counts.append(np.full(width, g.shape[0], dtype=np.int64))
        sums.append(g.sum(0).cpu().numpy())
        sum_sq.append((g * g).sum(0).cpu().numpy())
        mins.append(g.amin(0).float().cpu().numpy())
        maxs.append(g.amax(0).float().cpu().numpy())
    if not layers:
        return CHANNEL_PARTIALS.empty_table()
    join = np.concatenate
    columns = [np.full(len(layers), model, np.int32), layers, join(channels), join(counts), join(sums), join(sum_sq),
               join(mins), join(maxs)]
    return pa.table(columns, schema=CHANNEL_PARTIALS)


def to_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, CHANNEL_PARTIALS) as writer:
        writer.write_table(table)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def from_bytes(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def add(tables: Iterable[pa.Table]) -> pa.Table:
    """Partials added up per (model, layer, channel)."""
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return CHANNEL_PARTIALS.empty_table()
    if len(tables) == 1:
        return tables[0]
    total = pa.concat_tables(tables).group_by(["model", "layer", "channel"], use_threads=False).aggregate(
        [("count", "sum"), ("sum", "sum"), ("sum_sq", "sum"), ("min", "min"), ("max", "max")]
    )
    names = {"count_sum": "count", "sum_sum": "sum", "sum_sq_sum": "sum_sq", "min_min": "min", "max_max": "max"}
    return total.rename_columns([names.get(n, n) for n in total.column_names]).select(CHANNEL_PARTIALS.names).cast(
        CHANNEL_PARTIALS)


def of_model(total: pa.Table, model: int) -> pa.Table:
    """The partials of the run's model ``model``."""
    return total.filter(pc.equal(total["model"], model))


def check_counts(total: pa.Table, ok_rows: int, *, where: str) -> None:
    """Every layer saw every ``ok`` row once: the sums describe exactly the rows they claim to."""
    if total.num_rows == 0 and ok_rows == 0:
        return
    per_layer = total.group_by("layer").aggregate([("count", "min"), ("count", "max")])
    counts = set(per_layer["count_min"].to_pylist()) | set(per_layer["count_max"].to_pylist())
    if counts != {ok_rows}:
        raise InternalError(
            f"{where}: the channel statistics count {sorted(counts)} items per layer channel, "
            f"but {ok_rows} rows are ok; nothing of it was committed"
        )


def shard_rows(total: pa.Table, *, run_id: str, shard: int, models: Sequence[ModelIdentity]) -> pa.Table:
    """A shard's sums as :data:`CHANNEL_STATS` rows, with their mean and std beside them; ``models``
    names the run's models by position."""
    total = total.sort_by([("model", "ascending"), ("layer", "ascending"), ("channel", "ascending")])
    n = total.num_rows
    position = total["model"].to_numpy()
    count = pc.cast(total["count"], pa.float64())
    mean = pc.divide(total["sum"], count)
    variance = pc.subtract(pc.divide(total["sum_sq"], count), pc.multiply(mean, mean))
    columns = {
        "run_id": pa.array([run_id] * n, pa.string()),
        "shard": pa.array([shard] * n, pa.int32()),
        "model": pa.array([models[i].model for i in position], pa.string()),
        "weights_sha256": pa.array([models[i].weights_sha256 for i in position], pa.string()),
        "layer": total["layer"],
        "channel": total["channel"],
        "count": total["count"],
        "sum": total["sum"],
        "sum_sq": total["sum_sq"],
        "mean": mean,
        "std": pc.sqrt(pc.max_element_wise(variance, pa.scalar(0.0))),
        "min": total["min"],
        "max": total["max"],
    }
    return pa.table(columns, schema=CHANNEL_STATS)
