"""The output's Delta Lake tables (deltalake / delta-rs): layout, creation, and the primitives a
shard commit is built from.

``OUTPUT/predictions`` and ``OUTPUT/channel_stats`` are Delta tables partitioned by ``run_date``;
their data files are plain Parquet under ``run_date=YYYY-MM-DD/``. Workers write the files; the
driver adds them to a table in one transaction per shard (:mod:`pipeline.commit`). Delta's
application transaction ids make those commits idempotent and let concurrent writers of the
same keys collide instead of both landing (see :func:`append`).

S3 endpoint and credentials come from the standard AWS environment, which delta-rs reads by
itself; only the permission to speak plain HTTP to an ``http://`` endpoint is passed here.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal, overload

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.transaction import AddAction, CommitProperties, RemoveAction, Transaction

from pipeline import storage
from pipeline.schema import CHANNEL_STATS, KEYS, PARTITION, PREDICTIONS

__all__ = [
    "ConcurrentCommit",
    "FileStats",
    "OutputLayout",
    "add_action",
    "append",
    "delta_stats",
    "file_actions",
    "is_committed",
    "open_table",
    "scan",
    "storage_options",
]

TABLES = {"predictions": PREDICTIONS, "channel_stats": CHANNEL_STATS}
APP = "ghostnet-pipeline"


class ConcurrentCommit(RuntimeError):
    """Another writer committed a transaction this one depends on first; check again and retry."""


@dataclass(frozen=True)
class OutputLayout:
    """Where everything of one output lives."""

    root: str

    @classmethod
    def of(cls, output: str) -> OutputLayout:
        fs, path = storage.filesystem(output)
        if storage.is_local(fs):
            return cls(os.path.abspath(path))
        return cls(storage.to_uri(fs, path.rstrip("/")))

    def table(self, name: str) -> str:
        return storage.join(self.root, name)

    @property
    def runs(self) -> str:
        return storage.join(self.root, "_runs")

    def data_file(self, table: str, relative: str) -> str:
        return storage.join(self.table(table), relative)


def storage_options(uri: str) -> dict[str, str] | None:
    """What delta-rs needs beyond the AWS environment: leave to speak HTTP to an http:// endpoint."""
    if not uri.startswith(("s3://", "s3a://")):
        return None
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    return {"AWS_ALLOW_HTTP": "true"} if endpoint.startswith("http://") else {}


def table_schema(name: str) -> pa.Schema:
    return TABLES[name].append(pa.field(PARTITION, pa.date32()))


@overload
def open_table(uri: str, name: str, *, create: Literal[True]) -> DeltaTable: ...
@overload
def open_table(uri: str, name: str, *, create: bool = False) -> DeltaTable | None: ...
def open_table(uri: str, name: str, *, create: bool = False) -> DeltaTable | None:
    """The table at ``uri``, created empty first when ``create`` (another writer may race us to it)."""
    options = storage_options(uri)
    try:
        return storage.with_retries(lambda: DeltaTable(uri, storage_options=options))
    except TableNotFoundError:
        if not create:
            return None
    try:
        DeltaTable.create(uri, schema=table_schema(name), partition_by=[PARTITION], mode="ignore",
                          name=name, storage_options=options)
    except CommitFailedError:
        pass  # created by a concurrent writer between our look and our create
    return storage.with_retries(lambda: DeltaTable(uri, storage_options=options))


def file_actions(table: DeltaTable) -> pa.Table:
    """Every live data file of ``table`` with its statistics, one row each (flattened columns
    ``path``, ``size_bytes``, ``num_records``, ``min.<column>``, ``max.<column>``, ...)."""
    return pa.table(table.get_add_actions(flatten=True))


def files_where(actions: pa.Table, **equal: str) -> pa.Table:
    """Files whose rows all hold ``column == value`` for each pair given (by their min/max
    statistics); a file without statistics for a column is kept, since it may match."""
    keep = pa.array([True] * actions.num_rows, pa.bool_())
    for column, value in equal.items():
        for bound in ("min", "max"):
            name = f"{bound}.{column}"
            if name in actions.column_names:
                keep = pc.and_(keep, pc.fill_null(pc.equal(actions[name], value), True))
    return actions.filter(keep)


def files_overlapping(actions: pa.Table, low: str, high: str) -> pa.Table:
    """Files whose URI range meets [low, high] (kept when they have no URI statistics)."""
    if "min.uri" not in actions.column_names:
        return actions
    apart = pc.or_(pc.less(actions["max.uri"], low), pc.greater(actions["min.uri"], high))
    return actions.filter(pc.invert(pc.fill_null(apart, False)))


def scan(table_uri: str, paths: Sequence[str], columns: Sequence[str] = tuple(KEYS.names),
         batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
    """The ``columns`` of the data files at ``paths`` (relative to the table), file by file, batch by
    batch; each file is fetched whole with retries, as object stores throttle."""
    for path in paths:
        data = storage.read_bytes(storage.join(table_uri, path))
        yield from pq.ParquetFile(pa.py_buffer(data)).iter_batches(batch_size=batch_rows, columns=list(columns))


def app_id(*parts: object) -> str:
    return ":".join([APP, *(str(p) for p in parts)])


def is_committed(table: DeltaTable, app: str) -> bool:
    return table.transaction_version(app) is not None


def append(
    table: DeltaTable,
    name: str,
    actions: Sequence[AddAction | RemoveAction],
    *,
    app_ids: Sequence[str],
    metadata: dict[str, str],
) -> None:
    """Commit ``actions`` in one transaction that also records ``app_ids``.

    The transaction is checked against the version ``table`` was read at: when a writer
    committed one of the same application ids since, it fails with :class:`ConcurrentCommit`
    (delta-rs retries plain appends by itself, and refuses a concurrent one that shares an id).
    """
    version = table.version() + 1
    properties = CommitProperties(
        app_transactions=[Transaction(app, version) for app in app_ids],
        custom_metadata=metadata,
    )
    try:
        storage.with_retries(lambda: table.create_write_transaction(
            list(actions), mode="append", schema=table_schema(name), partition_by=[PARTITION],
            commit_properties=properties,
        ))
    except CommitFailedError as exc:
        raise ConcurrentCommit(str(exc)) from exc


def add_action(relative_path: str, size: int, run_date: str, stats: str) -> AddAction:
    return AddAction(relative_path, size, {PARTITION: run_date}, int(time.time() * 1000), True, stats)


@dataclass(frozen=True)
class FileStats:
    """A data file as the transaction log describes it."""

    path: str  # relative to the table root
    size: int
    rows: int
    stats: str  # Delta's per-file statistics, JSON

    def action(self, run_date: str) -> AddAction:
        return add_action(self.path, self.size, run_date, self.stats)


def read_file_stats(table_uri: str, relative: str) -> FileStats:
    """A data file already written, described for the log by reading it back."""
    fs, root = storage.filesystem(table_uri)
    path = storage.join(root, relative)
    with storage.with_retries(lambda: fs.open(path, "rb")) as f:
        data = pq.read_table(f)
    return FileStats(relative, int(storage.with_retries(lambda: fs.size(path))), data.num_rows, delta_stats(data))


_SKIPPED_TYPES = (pa.types.is_nested, pa.types.is_boolean, pa.types.is_binary, pa.types.is_large_binary)


def delta_stats(table: pa.Table) -> str:
    """Delta's statistics of one data file: row count, and min, max and null count per flat column.

    Readers skip files with them (``WHERE uri BETWEEN ...``, ``model = ...``); strings are kept
    whole, not cut to 32 characters as some writers do, so a URI range is exact.
    """
    minimum, maximum, nulls = {}, {}, {}
    for field in table.schema:
        column = table[field.name]
        nulls[field.name] = column.null_count
        if any(check(field.type) for check in _SKIPPED_TYPES) or column.null_count == len(column):
            continue
        low, high = (value.as_py() for value in pc.min_max(column).values())
        if low is not None and _finite(low) and _finite(high):
            minimum[field.name], maximum[field.name] = _stat(low), _stat(high, round_up=True)
    return json.dumps({"numRecords": table.num_rows, "minValues": minimum, "maxValues": maximum,
                       "nullCount": nulls}, allow_nan=False)


def _finite(value: Any) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def _stat(value: Any, *, round_up: bool = False) -> Any:
    """A statistic as Delta writes it; timestamps have millisecond precision, so a maximum is
    rounded up, never down, or a reader would skip a file that holds the row it asks for."""
    if isinstance(value, datetime):
        value = value.astimezone(timezone.utc)
        if round_up and value.microsecond % 1000:
            value += timedelta(microseconds=1000 - value.microsecond % 1000)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if isinstance(value, date):
        return value.isoformat()
    return value
