"""Plan a run of any size in flat driver memory: the listing becomes shards on local disk.

1. The listing streams into :data:`PARTITIONS` hash partitions of the URI (Arrow IPC files under
   a temporary folder); what the inputs hold that is not an item is counted by extension.
2. The keys each model (and weights) of the run already labeled stream into partitions of their own.
3. Partition by partition: duplicates go (the first listed copy of a URI stays), each item gets
   its shard from its position in the listing (partitions in order, URIs sorted within), and an
   anti-join per model finds which models still need it: its model mask (bit i for the run's
   model i). Items no model needs are dropped; the others are appended to their shard's file.

The driver holds one partition at a time. Shards come from the listing alone, before the diff:
the same listing cuts the same shards, whatever was committed in between.

The URI hash is FNV-1a (64 bit) over the URI's UTF-8 bytes, finished with MurmurHash3's fmix64;
an item's partition is that hash modulo :data:`PARTITIONS`. Both are part of the plan's
contract: change them and the shards of a resumed run move.
"""

from __future__ import annotations

import re
import resource
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.discover import modality_column
from pipeline.schema import ITEMS, KEYS, MODELS, SHARD

__all__ = ["PARTITIONS", "Listing", "Plan", "ShardPlan", "cut_shards", "read_shard", "spill_keys", "spill_listing",
           "unlabeled", "uri_hash"]

PARTITIONS = 512
SHARD_ITEMS = ITEMS.append(pa.field(SHARD, pa.int32(), nullable=False)).append(
    pa.field(MODELS, pa.int32(), nullable=False))

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_FMIX = (np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53))
_EXTENSION = re.compile(r"[^/]\.(?P<ext>[^./]+)$")


def uri_hash(uris: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The stable 64-bit hash of each string (see the module docstring), vectorized over the array."""
    strings = (uris.combine_chunks() if isinstance(uris, pa.ChunkedArray) else uris).cast(pa.large_string())
    n = len(strings)
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int64)[strings.offset : strings.offset + n + 1]
    data_buffer = strings.buffers()[2]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    # Longest first: at byte i, the strings still going are a prefix of this order.
    order = np.argsort(-lengths, kind="stable")
    starts, descending = offsets[:-1][order], lengths[order]
    still_going = np.searchsorted(-descending, -np.arange(int(descending[0]) if n else 0), side="left")
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i, k in enumerate(still_going):
            h[:k] ^= data[starts[:k] + i]
            h[:k] *= _FNV_PRIME
        for multiplier in _FMIX:
            h ^= h >> np.uint64(33)
            h *= multiplier
        h ^= h >> np.uint64(33)
    hashes = np.empty(n, dtype=np.uint64)
    hashes[order] = h
    return hashes


def partition_of(uris: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return (uri_hash(uris) % np.uint64(PARTITIONS)).astype(np.int64)


class _Partitions:
    """Record batches spilled by URI hash into one Arrow IPC stream per partition."""

    def __init__(self, folder: Path, schema: pa.Schema) -> None:
        self.folder, self.schema = folder, schema
        folder.mkdir(parents=True, exist_ok=True)
        self._writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
        self.present: set[int] = set()  # partitions that hold rows
        _allow_open_files(PARTITIONS + 64)

    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        if batch.num_rows == 0:
            return
        parts = partition_of(batch.column("uri"))
        order = np.argsort(parts, kind="stable")
        ordered, parts = batch.take(pa.array(order)), parts[order]
        bounds = np.flatnonzero(np.diff(parts)) + 1
        for start, end in zip(np.r_[0, bounds], np.r_[bounds, len(parts)], strict=True):
            self._writer(int(parts[start])).write(ordered.slice(start, end - start))

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def read(self, partition: int) -> pa.Table:
        if partition not in self.present:
            return self.schema.empty_table()
        path = self._path(partition)
        with pa.OSFile(str(path), "rb") as source:
            return pa.ipc.open_stream(source).read_all().combine_chunks()

    def _writer(self, partition: int) -> pa.ipc.RecordBatchStreamWriter:
        if partition not in self._writers:
            self._writers[partition] = pa.ipc.new_stream(str(self._path(partition)), self.schema)
            self.present.add(partition)
        return self._writers[partition]

    def _path(self, partition: int) -> Path:
        return self.folder / f"{partition:03d}.arrow"


def _allow_open_files(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


@dataclass
class Listing:
    """What the inputs hold, spilled to partitions: items per modality, and the rest counted."""

    partitions: _Partitions
    listed: int = 0  # objects the inputs named, items or not, duplicates included
    items: Counter[str] = field(default_factory=Counter)  # per modality, duplicates included
    skipped: Counter[str] = field(default_factory=Counter)  # not items, by lower-case extension
    uri_min: dict[str, str] = field(default_factory=dict)  # per modality
    uri_max: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0  # spent listing and spilling

    def uri_range(self, modality: str) -> tuple[str, str] | None:
        if modality not in self.uri_min:
            return None
        return self.uri_min[modality], self.uri_max[modality]


def spill_listing(batches: Iterable[pa.RecordBatch], folder: Path, modalities: Iterable[str]) -> Listing:
    """Stream a listing of (uri, etag, size_bytes) into partitions; keep the items of ``modalities``."""
    wanted = pa.array(sorted(modalities))
    listing = Listing(_Partitions(folder, ITEMS))
    started = time.monotonic()
    try:
        for batch in batches:
            listing.listed += batch.num_rows
            modality = modality_column(batch.column("uri"))
            is_item = pc.fill_null(pc.is_in(modality, wanted), False)
            listing.skipped.update(_extensions(batch.filter(pc.invert(is_item)).column("uri")))
            items = batch.filter(is_item)
            items = pa.RecordBatch.from_arrays([*items.columns, modality.filter(is_item)], schema=ITEMS)
            _note_items(listing, items)
            listing.partitions.add(items)
    finally:
        listing.partitions.close()
    listing.seconds = time.monotonic() - started
    return listing


def _note_items(listing: Listing, items: pa.RecordBatch) -> None:
    for modality in pc.unique(items.column("modality")).to_pylist():
        uris = items.column("uri").filter(pc.equal(items.column("modality"), modality))
        listing.items[modality] += len(uris)
        low, high = pc.min_max(uris).values()
        listing.uri_min[modality] = min(listing.uri_min.get(modality, low.as_py()), low.as_py())
        listing.uri_max[modality] = max(listing.uri_max.get(modality, high.as_py()), high.as_py())


def _extensions(uris: pa.Array) -> Counter[str]:
    if len(uris) == 0:
        return Counter()
    found = pc.utf8_lower(pc.struct_field(pc.extract_regex(uris, _EXTENSION.pattern), [0]))
    counts = pc.value_counts(pc.fill_null(pc.binary_join_element_wise(".", found, ""), "(none)"))
    return Counter({c["values"]: c["counts"] for c in counts.to_pylist()})


def spill_keys(batches: Iterable[pa.RecordBatch], folder: Path) -> _Partitions:
    """Stream labeled (uri, etag, size_bytes) keys into the same partitions as the listing."""
    partitions = _Partitions(folder, KEYS)
    try:
        for batch in batches:
            partitions.add(batch.select(KEYS.names).cast(KEYS))
    finally:
        partitions.close()
    return partitions


@dataclass(frozen=True)
class ShardPlan:
    """One shard's items still to label, in an Arrow IPC file of :data:`SHARD_ITEMS`."""

    index: int
    items: int
    path: str
    digest: str  # of its items' keys (and models), whatever their order: a retried commit has the same
    partitions: tuple[int, ...]  # the hash partitions its items fall in
    uri_min: str
    uri_max: str
    model_items: tuple[int, ...] = ()  # per model of the run: its items that model labels
    model_partitions: tuple[tuple[int, ...], ...] = ()  # per model: the partitions of those items

    @property
    def pairs(self) -> int:
        """(item, model) pairs to label: each gives its item's rows of that model."""
        return sum(self.model_items)


@dataclass(frozen=True)
class Plan:
    """What a run of one modality will do, before it does anything."""

    modality: str
    shard_size: int
    items_listed: int  # distinct items of this modality
    duplicates: int  # further copies of a listed URI, dropped
    items_labeled: int  # already labeled by every model of the run: not labeled again
    shards_listed: int  # shards the listing cuts into, labeled ones included
    shards: tuple[ShardPlan, ...]  # the shards with items to label
    model_labeled: tuple[int, ...] = ()  # per model: items it labeled already

    @property
    def items(self) -> int:
        return sum(s.items for s in self.shards)

    def model_items(self, model: int) -> int:
        """Items model ``model`` (its position in the run) will label."""
        return sum(s.model_items[model] for s in self.shards)


def cut_shards(
    listing: Listing, labeled: _Partitions | list[_Partitions | None] | None, *, modality: str, shard_size: int,
    folder: Path
) -> Plan:
    """Walk the partitions in order: drop duplicates, number shards, and mark each item with the
    models that still need it: those whose ``labeled`` (one per model of the run; one alone for a
    run of one model) does not hold it. Items no model needs are dropped."""
    per_model = labeled if isinstance(labeled, list) else [labeled]
    folder.mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(folder, len(per_model))
    position = duplicates = labeled_count = 0
    model_labeled = [0] * len(per_model)
    try:
        for partition in sorted(listing.partitions.present):
            part = listing.partitions.read(partition)
            part = part.filter(pc.equal(part["modality"], modality))
            if part.num_rows == 0:
                continue
            items = _first_per_uri(part)
            duplicates += part.num_rows - items.num_rows
            shard = (position + np.arange(items.num_rows)) // shard_size
            position += items.num_rows
            items = items.append_column(SHARD, pa.array(shard, pa.int32()))
            mask = np.zeros(items.num_rows, np.int32)
            for i, done in enumerate(per_model):
                needed = np.ones(items.num_rows, bool) if done is None else _needed(items, done.read(partition))
                model_labeled[i] += int(items.num_rows - needed.sum())
                mask |= needed.astype(np.int32) << i
            labeled_count += int((mask == 0).sum())
            items = items.append_column(MODELS, pa.array(mask, pa.int32())).filter(pa.array(mask != 0))
            writer.add(items, partition)
    finally:
        shards = writer.close()
    return Plan(modality, shard_size, position, duplicates, labeled_count, -(-position // shard_size), shards,
                tuple(model_labeled))


def _needed(items: pa.Table, labeled: pa.Table) -> np.ndarray:
    """For each of ``items`` (in order), whether ``labeled`` lacks its key."""
    if labeled.num_rows == 0:
        return np.ones(items.num_rows, bool)
    keys = ["_uri", "_etag", "_size"]
    position = pa.array(np.arange(items.num_rows), pa.int64())
    fresh = _join_keys(items.select(["uri", "etag", "size_bytes"])).append_column("_at", position).join(
        _join_keys(labeled).select(keys), keys=keys, join_type="left anti")
    needed = np.zeros(items.num_rows, bool)
    needed[fresh["_at"].to_numpy()] = True
    return needed


def _first_per_uri(items: pa.Table) -> pa.Table:
    """Sorted by URI, the first listed row of each (the sort is stable)."""
    items = items.take(pc.sort_indices(items, [("uri", "ascending")]))
    if items.num_rows < 2:
        return items
    uris = items["uri"]
    repeated = pc.equal(uris.slice(1), uris.slice(0, items.num_rows - 1))
    return items.filter(pa.chunked_array([pa.array([True]), *pc.invert(repeated).chunks]))


def unlabeled(items: pa.Table, labeled: pa.Table) -> pa.Table:
    """``items`` whose (uri, etag, size_bytes) no labeled row has, in shard and URI order."""
    if labeled.num_rows == 0:
        return items
    keys = ["_uri", "_etag", "_size"]
    fresh = _join_keys(items).join(_join_keys(labeled).select(keys), keys=keys, join_type="left anti")
    return fresh.drop_columns(keys).sort_by([(SHARD, "ascending"), ("uri", "ascending")]).select(items.column_names)


def _join_keys(table: pa.Table) -> pa.Table:
    # Null never equals null in a join: an object listed without etag or size still matches itself.
    etag, size = _known(table)
    return table.append_column("_uri", table["uri"]).append_column("_etag", etag).append_column("_size", size)


def _known(table: pa.Table) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """``etag`` and ``size_bytes`` with a missing value as "" and -1, values no object has."""
    return pc.fill_null(table["etag"], ""), pc.fill_null(table["size_bytes"], -1)


class _ShardWriter:
    """Appends rows, in shard order, to one IPC file per shard; the shards of a listing cross
    partitions in order, so one file is open at a time."""

    def __init__(self, folder: Path, models: int) -> None:
        self.folder, self.models = folder, models
        self.done: list[ShardPlan] = []
        self._open: tuple[int, pa.ipc.RecordBatchFileWriter] | None = None
        self._items = 0
        self._digest = np.uint64(0)
        self._partitions: list[int] = []
        self._model_items = [0] * models
        self._model_partitions: list[list[int]] = [[] for _ in range(models)]
        self._uri_min: str | None = None
        self._uri_max: str | None = None

    def add(self, rows: pa.Table, partition: int) -> None:
        shards = rows[SHARD].to_numpy()
        bounds = np.flatnonzero(np.diff(shards)) + 1
        for start, end in zip(np.r_[0, bounds], np.r_[bounds, len(shards)], strict=True):
            if end > start:
                self._write(int(shards[start]), rows.slice(start, end - start), partition)

    def _write(self, shard: int, rows: pa.Table, partition: int) -> None:
        if self._open is None or self._open[0] != shard:
            self._finish()
            path = self.folder / f"{shard:06d}.arrow"
            self._open = (shard, pa.ipc.new_file(str(path), SHARD_ITEMS))
        self._open[1].write_table(rows.cast(SHARD_ITEMS))
        self._items += rows.num_rows
        with np.errstate(over="ignore"):
            self._digest += np.sum(uri_hash(_key_strings(rows, with_models=self.models > 1)), dtype=np.uint64)
        if not self._partitions or self._partitions[-1] != partition:
            self._partitions.append(partition)
        mask = rows[MODELS].to_numpy()
        for i in range(self.models):
            needing = int(np.count_nonzero(mask & (1 << i)))
            self._model_items[i] += needing
            if needing and (not self._model_partitions[i] or self._model_partitions[i][-1] != partition):
                self._model_partitions[i].append(partition)
        low, high = pc.min_max(rows["uri"]).values()
        self._uri_min = min(filter(None, (self._uri_min, low.as_py())))
        self._uri_max = max(filter(None, (self._uri_max, high.as_py())))

    def _finish(self) -> None:
        if self._open is None:
            return
        shard, writer = self._open
        writer.close()
        self.done.append(ShardPlan(shard, self._items, str(self.folder / f"{shard:06d}.arrow"),
                                   f"{int(self._digest):016x}", tuple(self._partitions),
                                   self._uri_min or "", self._uri_max or "", tuple(self._model_items),
                                   tuple(tuple(p) for p in self._model_partitions)))
        self._open, self._items, self._digest, self._partitions = None, 0, np.uint64(0), []
        self._model_items = [0] * self.models
        self._model_partitions = [[] for _ in range(self.models)]
        self._uri_min = self._uri_max = None

    def close(self) -> tuple[ShardPlan, ...]:
        self._finish()
        return tuple(self.done)


def _key_strings(rows: pa.Table, *, with_models: bool = False) -> pa.Array:
    etag, size = _known(rows)
    parts = [rows["uri"], etag, pc.cast(size, pa.string())]
    if with_models:  # a shard planned again for other models is another commit
        parts.append(pc.cast(rows[MODELS], pa.string()))
    joined = pc.binary_join_element_wise(*parts, "\x00")
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


def read_shard(path: str, block_rows: int) -> Iterator[pa.Table]:
    """A shard's items in blocks of at most ``block_rows`` rows (the read task of a run)."""
    with pa.memory_map(path) as source:
        table = pa.ipc.open_file(source).read_all()
    for start in range(0, table.num_rows, block_rows):
        yield table.slice(start, block_rows).combine_chunks()
