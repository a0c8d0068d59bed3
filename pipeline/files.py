"""Immutable data files: the names an attempt writes under, and writing them.

A data file is named ``run_date=D/<run>-<attempt>-<shard>-<digest>-<token>.parquet``: its run, the
attempt that wrote it (:class:`pipeline.fencing.Attempt`), its shard and the shard's digest (which
together name the shard's commit), and a token of its own. No other attempt, and no retried task of
the same attempt, can produce the name, and files are created only where no object is
(:func:`pipeline.storage.create_file`): a file, once written, is never replaced. This project never
deletes a committed file either; only Delta's ``vacuum`` does, under its retention rules.
"""

from __future__ import annotations

import io
import re
import secrets
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.schema import PARTITION
from pipeline.tables import FileStats, file_stats

__all__ = ["DataFile", "parse", "write_parquet"]

_NAME = re.compile(r"^(?P<run>.+)-(?P<attempt>[0-9a-f]{12})-(?P<shard>\d{5})-(?P<digest>[0-9a-f]{16})"
                   r"-(?P<token>[0-9a-f]{8})\.parquet(?:\.[0-9a-f]+\.tmp)?$")


@dataclass(frozen=True)
class DataFile:
    """What a data file's name says."""

    run_id: str
    attempt: str
    shard: int
    digest: str  # the shard's
    written: bool  # False: a local file's aside copy that never reached its name


def name(run_id: str, attempt: str, shard: int, digest: str) -> str:
    return f"{run_id}-{attempt}-{shard:05d}-{digest}-{secrets.token_hex(4)}.parquet"


def parse(relative: str) -> DataFile | None:
    """What ``relative`` (a path under a table, or a bare name) says, or None if it is not ours."""
    found = _NAME.match(relative.rsplit("/", 1)[-1])
    if found is None:
        return None
    return DataFile(found["run"], found["attempt"], int(found["shard"]), found["digest"],
                    written=not relative.endswith(".tmp"))


def write_parquet(table_uri: str, data: pa.Table, *, run_id: str, attempt: str, run_date: str, shard: int,
                  digest: str, row_group_size: int = 50_000) -> FileStats:
    """Write ``data`` as a new data file of the table at ``table_uri`` (not committed yet)."""
    sink = io.BytesIO()
    pq.write_table(data, sink, row_group_size=row_group_size, compression="zstd")
    while True:
        relative = f"{PARTITION}={run_date}/{name(run_id, attempt, shard, digest)}"
        try:
            storage.create_file(storage.join(table_uri, relative), sink.getvalue())
        except FileExistsError:
            continue  # a token drawn twice: draw again
        return FileStats(relative, sink.tell(), data.num_rows, file_stats(data))
