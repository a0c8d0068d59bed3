"""The output's tables as the commit protocol sees them: a layout, and one narrow interface.

``OUTPUT/predictions`` and ``OUTPUT/channel_stats`` are tables partitioned by ``run_date``; their
data files are plain, immutable Parquet under ``run_date=YYYY-MM-DD/``. The protocol needs five
things of a table (:class:`Table`): read its latest version, list its live files with their
statistics, read an application's transaction version, and commit files together with application
transaction versions atomically, failing when a concurrent commit set one of the same application
ids. Delta Lake is the implementation (:mod:`pipeline.delta`); another table format with
conditional commits (Iceberg) could be a second.

Other writers are expected: analysts compact, Z-order, checkpoint and vacuum live tables, so a
file's statistics may span several runs, models and weights. Pruning treats min/max as a range.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.schema import CHANNEL_STATS, KEYS, PARTITION, PREDICTIONS

__all__ = [
    "TABLES",
    "ConcurrentCommit",
    "FileStats",
    "OutputLayout",
    "Table",
    "Tables",
    "app_id",
    "file_stats",
    "files_holding",
    "files_overlapping",
    "read_file_stats",
    "scan",
    "table_schema",
]

TABLES = {"predictions": PREDICTIONS, "channel_stats": CHANNEL_STATS}
APP = "ghostnet-pipeline"


class ConcurrentCommit(RuntimeError):
    """A writer committed one of the same application ids since this table's snapshot: read the
    table again, check again, and retry or stop."""


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


@dataclass(frozen=True)
class FileStats:
    """A data file as a table's log describes it."""

    path: str  # relative to the table root
    size: int
    rows: int
    stats: str  # per-column statistics, JSON (Delta's form: numRecords, minValues, maxValues, nullCount)


class Table(Protocol):
    """One table at one version (a snapshot), and the commits the protocol makes to it."""

    uri: str
    name: str

    def refresh(self) -> None:
        """Move to the table's latest version."""

    def clone(self) -> Table:
        """Another snapshot of the same table, for another thread."""

    def version(self) -> int: ...

    def files(self) -> pa.Table:
        """Every live data file, one row each: ``path``, ``size_bytes``, ``num_records`` and the
        flattened statistics ``min.<column>``, ``max.<column>``."""

    def app_version(self, app: str) -> int | None:
        """The version the latest commit carrying application id ``app`` set, or None."""

    def commit(self, adds: Sequence[FileStats], *, run_date: str, apps: Mapping[str, int],
               metadata: Mapping[str, str]) -> None:
        """Add ``adds`` (maybe none) and set each application id of ``apps`` to its version, in one
        atomic commit on top of this snapshot; :class:`ConcurrentCommit` when a commit since this
        snapshot set one of the same application ids."""


@dataclass(frozen=True)
class Tables:
    """An output's two tables, each a snapshot refreshed before every commit."""

    predictions: Table
    channel_stats: Table


def table_schema(name: str) -> pa.Schema:
    return TABLES[name].append(pa.field(PARTITION, pa.date32()))


def app_id(*parts: object) -> str:
    return ":".join([APP, *(str(p) for p in parts)])


def files_holding(files: pa.Table, **values: str) -> pa.Table:
    """Files that may hold rows with ``column == value`` for every pair given: those whose
    statistics put the value between their minimum and maximum. A file another engine wrote or an
    analyst compacted may mix several values; one without statistics for a column is kept."""
    keep = pa.array([True] * files.num_rows, pa.bool_())
    for column, value in values.items():
        low, high = f"min.{column}", f"max.{column}"
        if low in files.column_names:
            keep = pc.and_(keep, pc.fill_null(pc.less_equal(files[low], value), True))
        if high in files.column_names:
            keep = pc.and_(keep, pc.fill_null(pc.greater_equal(files[high], value), True))
    return files.filter(keep)


def files_overlapping(files: pa.Table, low: str, high: str) -> pa.Table:
    """Files whose URI range meets [low, high] (kept when they have no URI statistics)."""
    if "min.uri" not in files.column_names:
        return files
    apart = pc.or_(pc.less(files["max.uri"], low), pc.greater(files["min.uri"], high))
    return files.filter(pc.invert(pc.fill_null(apart, False)))


def scan(table_uri: str, paths: Sequence[str], columns: Sequence[str] = tuple(KEYS.names), *,
         where: Mapping[str, str] | None = None, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
    """The ``columns`` of the data files at ``paths`` (relative to the table), file by file, batch by
    batch, keeping only rows with ``column == value`` for each pair of ``where``: a file pruned by
    its statistics may still hold rows of other runs, models or weights. Each file is fetched
    whole, with retries, as object stores throttle."""
    wanted = list(dict.fromkeys([*columns, *(where or {})]))
    for path in paths:
        data = storage.read_bytes(storage.join(table_uri, path))
        for batch in pq.ParquetFile(pa.py_buffer(data)).iter_batches(batch_size=batch_rows, columns=wanted):
            if where:
                keep = pa.array([True] * batch.num_rows, pa.bool_())
                for column, value in where.items():
                    keep = pc.and_(keep, pc.fill_null(pc.equal(batch.column(column), value), False))
                batch = batch.filter(keep)
            if batch.num_rows:
                yield batch.select(list(columns))


def read_file_stats(table_uri: str, relative: str) -> FileStats:
    """A data file already written, described for the log by reading it back."""
    data = pq.read_table(pa.py_buffer(storage.read_bytes(storage.join(table_uri, relative))))
    return FileStats(relative, storage.size(storage.join(table_uri, relative)), data.num_rows, file_stats(data))


_SKIPPED_TYPES = (pa.types.is_nested, pa.types.is_boolean, pa.types.is_binary, pa.types.is_large_binary)


def file_stats(table: pa.Table) -> str:
    """The statistics of one data file: row count, and min, max and null count per flat column.

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
