"""What a run that ended badly leaves behind, and how the next run on the output clears it.

A run writes its data files into the tables' folders before committing them. When it stops
early it deletes the files of its uncommitted shards itself (:func:`sweep`). When its driver
dies, its live record (``_runs/<id>.running.json``) stops beating; the next run on the output
then finishes its bookkeeping (:func:`recover_dead_runs`): a shard whose predictions committed
but whose channel statistics did not gets them (the file was written before the first commit),
files of shards that never committed are deleted, and the record becomes final, ``failed``.

A run is dead when its heartbeat is older than :data:`STALE_AFTER_S`, or at once when it ran on
this host and its process is gone.
"""

from __future__ import annotations

import logging
import os
import re
import socket

from pipeline import record as records
from pipeline import storage, tables
from pipeline.commit import commit_channel_stats
from pipeline.record import RunRecord
from pipeline.schema import PARTITION
from pipeline.tables import OutputLayout

__all__ = ["STALE_AFTER_S", "recover_dead_runs", "sweep"]

log = logging.getLogger("ghostnet_pipeline")

STALE_AFTER_S = 600.0  # ten heartbeats
_SHARD_FILE = re.compile(r"^(?P<run>.+)-(?P<shard>\d{5})-(?P<digest>[0-9a-f]{16})\.parquet$")


def recover_dead_runs(layout: OutputLayout) -> list[str]:
    """Finish the bookkeeping of every run on this output whose driver died; their run ids."""
    finished = []
    for record in records.running(layout.runs):
        if not _is_dead(record):
            continue
        log.warning("run %s stopped without ending (driver lost); clearing what it left", record.run_id)
        sweep(layout, record.run_id, record.run_date)
        record.status = records.FAILED
        record.error = record.error or "the driver stopped before the run ended; its committed shards stay"
        record.finished_at = records.now()
        records.write(layout.runs, record)
        finished.append(record.run_id)
    return finished


def _is_dead(record: RunRecord) -> bool:
    if records.seconds_since_update(record) > STALE_AFTER_S:
        return True
    return record.host == socket.gethostname() and not _alive(record.pid)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(layout: OutputLayout, run_id: str, run_date: str) -> int:
    """Make the tables' folders hold only committed files of ``run_id``: commit the statistics of
    shards whose predictions committed, delete the rest. Returns how many files were deleted."""
    prefix = f"{PARTITION}={run_date}/{run_id}-"
    predictions = tables.open_table(layout.table("predictions"), "predictions")
    stats = tables.open_table(layout.table("channel_stats"), "channel_stats")
    committed_predictions = _committed_paths(predictions, prefix)
    for relative in storage.list_prefix(layout.table("channel_stats"), prefix):
        if stats is not None and relative in _committed_paths(stats, prefix):
            continue
        match = _SHARD_FILE.match(relative.rsplit("/", 1)[-1])
        if match is None or predictions is None:
            continue
        app = tables.app_id(run_id, int(match["shard"]), match["digest"])
        if tables.is_committed(predictions, app):
            stats_file = tables.read_file_stats(layout.table("channel_stats"), relative)
            commit_channel_stats(layout, run_id, run_date, app, stats_file, int(match["shard"]))
    deleted = 0
    for name, committed in (("predictions", committed_predictions),
                            ("channel_stats", _committed_paths(tables.open_table(
                                layout.table("channel_stats"), "channel_stats"), prefix))):
        for relative in storage.list_prefix(layout.table(name), prefix):
            if relative not in committed:
                storage.remove_file(layout.data_file(name, relative))
                deleted += 1
    return deleted


def _committed_paths(table, prefix: str) -> set[str]:
    if table is None:
        return set()
    paths = tables.file_actions(table)["path"].to_pylist()
    return {p for p in paths if p.startswith(prefix)}
