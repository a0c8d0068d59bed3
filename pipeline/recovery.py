"""What a run that stopped leaves behind, and how it is cleared: fence first, then sweep.

A run writes its data files into the tables' folders before committing them, and lists a shard as
pending in its live record before the shard's commit. When an attempt stops on an error it settles
its own files (:func:`settle_attempt`): the statistics of a shard whose predictions committed are
committed if they are not yet, and the files of shards it did not commit are deleted. When its
driver dies, its live record stops being rewritten; the next run on the output judges it dead by
the storage's clock (:func:`is_dead`) and finishes it (:func:`finish_dead_run`):

1. it fences the run in the predictions log (:func:`pipeline.fencing.fence`), so that the run,
   if it was only slow, can never commit again;
2. it commits the statistics of the shards whose predictions committed;
3. it lists the run's files and, if the fence still holds (no resume took the run over since),
   deletes those of shards that no attempt committed: no one can commit them any more;
4. it reads the record again (every shard is listed as pending before its commit, and nothing of
   the run commits after the fence), reconciles it with the log (a pending shard counts only if its
   commit is there) and makes it final, ``failed``.

Committed files are never deleted here, whatever happened to them since (compaction may have
replaced them): that is Delta ``vacuum``'s job, under its retention rules.
"""

from __future__ import annotations

import logging

from pipeline import files, storage, tables
from pipeline import record as records
from pipeline.commit import commit_channel_stats
from pipeline.fencing import STALE_AFTER_S, Attempt, Host, age, fence, run_app
from pipeline.files import DataFile
from pipeline.record import RunRecord
from pipeline.schema import PARTITION
from pipeline.tables import OutputLayout, Tables

__all__ = ["finish_dead_run", "is_dead", "recover_dead_runs", "settle_attempt"]

log = logging.getLogger("ghostnet_pipeline")


def recover_dead_runs(layout: OutputLayout, tables_: Tables, host: Host) -> list[str]:
    """Finish every run on this output whose driver died; their run ids."""
    live = records.running(layout.runs)
    if not live:
        return []
    now = storage.storage_now(layout.runs)
    return [r.run_id for r in live if is_dead(layout, r, host, now) and finish_dead_run(layout, tables_, r, host)]


def is_dead(layout: OutputLayout, record: RunRecord, host: Host, now: float) -> bool:
    """Is the run of this live record dead? Its record was last written more than
    :data:`STALE_AFTER_S` ago by the storage's clock (``now``: the store's time), or it ran on this
    host and its process is gone."""
    try:
        silent = age(records.live_uri(layout.runs, record.run_id), now)
    except FileNotFoundError:
        return False  # it ended while we looked
    return silent > STALE_AFTER_S or (record.host == host.name and not host.alive(record.pid))


def finish_dead_run(layout: OutputLayout, tables_: Tables, record: RunRecord, host: Host) -> bool:
    """Fence the dead run of ``record``, settle its files and make its record final; False when it
    showed it is alive while we fenced."""
    def still_dead() -> bool:
        current = records.load_live(layout.runs, record.run_id)
        return current is not None and is_dead(layout, current, host, storage.storage_now(layout.runs))

    fenced = fence(tables_.predictions, record.run_id, record.run_date, still_dead=still_dead)
    if fenced is None:
        return False
    # Read again: a shard is listed as pending before its commit, and no commit of the run lands
    # after the fence, so the record read now knows of every shard the log can hold.
    record = records.load_live(layout.runs, record.run_id) or record
    log.warning("run %s stopped without ending (driver lost); fenced it and clearing what it left", record.run_id)
    deleted = _settle(layout, tables_, record.run_id, record.run_date, attempt=None, owner=fenced)
    final = records.load_final(layout.runs, record.run_id)
    if final is not None and final.committed and final.attempt == record.attempt:
        storage.remove_file(records.live_uri(layout.runs, record.run_id))  # a late heartbeat of a finished attempt
        return True
    reconcile(record, tables_, since=final)
    record.status = records.FAILED
    record.error = record.error or ("the driver stopped before the run ended; another run fenced it and "
                                    "cleared its uncommitted files; its committed shards stay")
    record.finished_at = records.now(host.clock())
    records.write(layout.runs, record, clock=host.clock())
    log.warning("run %s: %d uncommitted files deleted, %d shards committed", record.run_id, deleted,
                record.shards_committed)
    return True


def settle_attempt(layout: OutputLayout, tables_: Tables, attempt: Attempt, run_date: str) -> int:
    """An attempt that stops settles its own files; returns how many it deleted."""
    return _settle(layout, tables_, attempt.run_id, run_date, attempt=attempt.token, owner=None)


def reconcile(record: RunRecord, tables_: Tables, *, since: RunRecord | None = None) -> None:
    """Count the pending shards of ``record`` whose commit is in the log, drop the others, and add
    the committed shards another record of the run (``since``) knows of."""
    predictions = tables_.predictions
    predictions.refresh()
    for shard in list(record.pending):
        committed_by = predictions.app_version(tables.app_id(record.run_id, shard.shard, shard.digest))
        if committed_by is not None and committed_by == Attempt(record.run_id, shard.attempt).version:
            shard.committed_at = shard.committed_at or record.updated_at
            record.add_shard(shard)
    record.pending = []
    for shard in since.shards if since is not None else ():
        record.add_shard(shard)


def _settle(layout: OutputLayout, tables_: Tables, run_id: str, run_date: str, *, attempt: str | None,
            owner: int | None) -> int:
    """Roll the statistics of committed shards forward, then delete the files of shards no attempt
    committed: of one ``attempt``, or, while the run's id in the log is still ``owner`` (a fence),
    of every attempt."""
    found = {name: _files_of(layout, name, run_id, run_date, attempt) for name in tables.TABLES}
    predictions, stats = tables_.predictions, tables_.channel_stats
    predictions.refresh()

    def committed(f: DataFile) -> bool:
        app = tables.app_id(run_id, f.shard, f.digest)
        return predictions.app_version(app) == Attempt(run_id, f.attempt).version

    for relative, f in found["channel_stats"]:
        if f.written and committed(f):
            commit_channel_stats(stats, tables.app_id(run_id, f.shard, f.digest), Attempt(run_id, f.attempt).version,
                                 tables.read_file_stats(layout.table("channel_stats"), relative),
                                 run_date=run_date, run_id=run_id, shard=f.shard)
    if owner is not None:
        predictions.refresh()
        if predictions.app_version(run_app(run_id)) != owner:
            return 0  # a resume took the run over since we listed: what it writes is its own
    deleted = 0
    for name, listed in found.items():
        for relative, f in listed:
            if not f.written or not committed(f):
                storage.remove_file(layout.data_file(name, relative))
                deleted += 1
    return deleted


def _files_of(layout: OutputLayout, table: str, run_id: str, run_date: str,
              attempt: str | None) -> list[tuple[str, DataFile]]:
    listed = storage.list_prefix(layout.table(table), f"{PARTITION}={run_date}/{run_id}-")
    parsed = ((relative, files.parse(relative)) for relative in listed)
    return [(r, f) for r, f in parsed if f is not None and f.run_id == run_id and attempt in (None, f.attempt)]
