"""What a schedule is made of, the same whatever implementation it runs against: the bucket's
items, the actors' parts (writers, sweepers, a maintainer), the rows a writer's engine writes, and
the maintainer itself, which uses deltalake as an analyst would."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from pipeline import channel_stats
from pipeline.config import RunConfig
from pipeline.model import ModelSpec
from pipeline.rows import ROWS
from pipeline.schema import CHANNEL_PARTIALS, LAST, PARTIALS, SHARD

__all__ = ["RUN_DATE", "SHARD_SIZE", "MaintainerSpec", "SweeperSpec", "WriterSpec", "item_uris", "listing_batch",
           "maintainer", "shard_rows"]

RUN_DATE = "2027-01-15"
SHARD_SIZE = 3
LAYERS = ("blocks.1.0.se", "blocks.3.0.se")


def item_uris(n: int) -> list[str]:
    return [f"s3://sim-bucket/in/img-{i:03d}.jpg" for i in range(n)]


@dataclass(frozen=True)
class WriterSpec:
    name: str
    kind: str  # run, nightly, reprocess, resume
    model: str
    seed: int  # of the random weights: with the model, the weights_sha256 the rows carry
    items: int  # the first ``items`` of the bucket are listed
    run_id: str | None = None  # reprocess: the run id; resume: the run it continues
    files_per_shard: int = 1
    shard_size: int = SHARD_SIZE
    start_s: float = 0.0  # the command starts this long after the schedule does
    also: tuple[str, ...] = ()  # the architectures of further models of the run (same seed), in order

    @property
    def reprocess(self) -> bool:
        return self.kind in ("reprocess", "resume")

    @property
    def models(self) -> tuple[str, ...]:
        return (self.model, *self.also)

    def spec(self) -> ModelSpec:
        return ModelSpec(self.model, "random", seed=self.seed, modality="image")

    def specs(self) -> list[ModelSpec]:
        return [ModelSpec(model, "random", seed=self.seed, modality="image") for model in self.models]

    def config(self, root: str) -> RunConfig:
        several: dict[str, Any] = {}
        if self.also:  # the tree before several models (tests/protocol/legacy.py) has no ModelEntry, nor such writers
            from pipeline.config import ModelEntry

            several["models"] = tuple(ModelEntry(m) for m in self.models)
        return RunConfig(
            inputs=("sim://listing",), output=root, model=self.model, weights="random", **several, seed=self.seed,
            reprocess=self.reprocess, resume=self.run_id if self.kind == "resume" else None,
            run_id=self.run_id if self.kind == "reprocess" else None, shard_size=self.shard_size,
            max_error_rate=1.0, run_date=RUN_DATE)


@dataclass(frozen=True)
class SweeperSpec:
    name: str
    passes: int
    gap_s: float = 0.0  # before each pass


@dataclass(frozen=True)
class MaintainerSpec:
    name: str
    operations: tuple[str, ...] = field(default_factory=tuple)
    gap_s: float = 0.0  # before each operation


def listing_batch(n: int) -> pa.RecordBatch:
    """The bucket's first ``n`` objects as a listing gives them."""
    uris = item_uris(n)
    return pa.record_batch([pa.array(uris), pa.array([f"etag-{u[-7:-4]}" for u in uris]),
                            pa.array([1000 + i for i in range(len(uris))], pa.int64())],
                           names=["uri", "etag", "size_bytes"])


def shard_rows(items: pa.Table, model: str, weights_sha256: str, run_id: str, *, position: int = 0) -> pa.Table:
    """What the model stage would hand the write stage for ``items`` (a piece of one shard) and one
    model (the run's model ``position``): all ``ok``, with the channel partials of exactly these rows."""
    n = items.num_rows
    partial = pa.table({"model": [position] * 2 * len(LAYERS),
                        "layer": [layer for layer in LAYERS for _ in range(2)], "channel": [0, 1] * len(LAYERS),
                        "count": [n] * 2 * len(LAYERS), "sum": [0.5 * n] * 2 * len(LAYERS),
                        "sum_sq": [0.25 * n] * 2 * len(LAYERS), "min": [0.5] * 2 * len(LAYERS),
                        "max": [0.5] * 2 * len(LAYERS)})
    partial = partial.select(CHANNEL_PARTIALS.names).cast(CHANNEL_PARTIALS)  # the legacy tree's have no model
    now = datetime.now(timezone.utc)
    rows = [{
        "uri": uri, "etag": etag, "size_bytes": size, "modality": "image", "segment": 0, "start_s": None,
        "end_s": None, "status": "ok", "error": None, "label": "cat", "score": 0.9, "topk_ids": [0],
        "topk_labels": ["cat"], "topk_scores": [0.9], "embedding": None, "channel_weights": None,
        "model": model, "weights_sha256": weights_sha256, "run_id": run_id,
        "processed_at": now, SHARD: shard, LAST: True, PARTIALS: channel_stats.to_bytes(partial) if i == 0 else None,
    } for i, (uri, etag, size, shard) in enumerate(zip(
        items["uri"].to_pylist(), items["etag"].to_pylist(), items["size_bytes"].to_pylist(),
        items[SHARD].to_pylist(), strict=True))]
    return pa.Table.from_pylist(rows, schema=ROWS)


def table_options(uri: str) -> dict[str, str] | None:
    """What deltalake needs to reach the table at ``uri`` beyond the AWS environment."""
    return {"AWS_ALLOW_HTTP": "true"} if uri.startswith("s3://") else None


def arrow_files(uri: str) -> pafs.FileSystem:
    """pyarrow's own filesystem for the table at ``uri``, to read its files with (not deltalake's
    Python handler, which can abort the process at exit: pipeline.storage.arrow_filesystem says
    why). The checker's own, so that it judges the code under test, the old one included, without
    using it."""
    if "://" not in uri:
        return pafs.SubTreeFileSystem(os.path.abspath(uri), pafs.LocalFileSystem())
    fs, path = pafs.FileSystem.from_uri(uri)
    return pafs.SubTreeFileSystem(path, fs)


def open_delta(uri: str) -> DeltaTable | None:
    """The Delta table at ``uri``, or None where there is none yet."""
    try:
        return DeltaTable(uri, storage_options=table_options(uri))
    except TableNotFoundError:
        return None


def maintainer(sim: Any, root: str, spec: MaintainerSpec, host: Any) -> list[str]:
    """An analyst's table maintenance, with the deltalake calls they would use."""
    done = []
    for operation in spec.operations:
        name, table_name = operation.split(":")
        sim.sleep(spec.gap_s)
        sim.point(f"maintain-{name}")
        table = open_delta(f"{root}/{table_name}")
        if table is None:
            continue
        try:
            if name == "compact":
                table.optimize.compact()
            elif name == "z_order":
                table.optimize.z_order(["uri"])
            elif name == "checkpoint":
                table.create_checkpoint()
            elif name == "vacuum":
                table.vacuum(dry_run=False)  # default retention, enforced
        except Exception as exc:  # noqa: BLE001 - an analyst's tool failing (a conflict) is theirs to retry
            done.append(f"{operation} failed: {type(exc).__name__}")
            continue
        done.append(operation)
    return done
