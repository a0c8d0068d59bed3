"""The state of one run attempt, owned by one object: :class:`RunState`.

It holds the run's record and is its only writer while the attempt goes: every transition (planned,
a shard about to commit, committed, dropped, finished, failed) is a method that changes the record
and writes it, under one lock, which the heartbeat shares. The heartbeat rewrites the live record
every :data:`HEARTBEAT_S` seconds so other runs can tell by the storage's clock that it is alive,
and checks in the log that the attempt still holds its run. When it cannot write for
:data:`HEARTBEAT_GIVE_UP_S` seconds, or finds the attempt fenced, the attempt stops: before long,
another run would judge it dead and fence it anyway.
"""

from __future__ import annotations

import _thread
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from pipeline import record as records
from pipeline import storage
from pipeline.commit import CommitOutcome, merge_errors, top_errors
from pipeline.errors import RunFailed
from pipeline.fencing import STALE_AFTER_S, Attempt, Fenced, Host, check_owner
from pipeline.record import RunRecord, ShardRecord
from pipeline.tables import OutputLayout, Table

__all__ = ["HEARTBEAT_GIVE_UP_S", "HEARTBEAT_S", "RunState"]

log = logging.getLogger("ghostnet_pipeline")

HEARTBEAT_S = 30.0
HEARTBEAT_GIVE_UP_S = STALE_AFTER_S / 2  # stop well before another run may judge this one dead


class RunState:
    """One attempt's record and its transitions; see the module docstring."""

    def __init__(self, layout: OutputLayout, record: RunRecord, attempt: Attempt, host: Host) -> None:
        self.layout, self.record, self.attempt, self.host = layout, record, attempt, host
        record.attempt, record.host, record.pid = attempt.token, host.name, host.pid
        record.status, record.error, record.finished_at = records.RUNNING, None, None
        self._lock = threading.RLock()
        self._errors: Counter[tuple[str, str]] = Counter(
            {(e["status"], e["error"]): e["count"] for e in record.top_errors})
        self._examples = {(e["status"], e["error"]): e["uri"] for e in record.top_errors}
        self._stopped: str | None = None  # why the heartbeat stopped the attempt
        self._started = self._last_beat = host.clock()
        self._committed_items = 0  # by this attempt

    # --- transitions -----------------------------------------------------------------------------

    def planned(self, items: int, shards: int) -> None:
        """A plan (the first, or one made again) has ``items`` left to label in ``shards``."""
        with self._lock:
            self.record.items_to_label = items
            self.record.shards_total = self.record.shards_committed + shards
            self._write()

    def committing(self, shard: ShardRecord) -> None:
        """``shard`` is about to be committed: listed as pending before its commit can land."""
        self.check()
        with self._lock:
            self.record.pending.append(shard)
            self._write()

    def committed(self, outcome: CommitOutcome) -> None:
        assert outcome.record is not None
        with self._lock:
            self._committed_items += outcome.record.items
            elapsed = self.host.clock() - self._started
            self.record.items_per_s = round(self._committed_items / elapsed, 3) if elapsed > 0 else 0.0
            self.record.add_shard(outcome.record)
            self.record.add_labels(outcome.labels)
            merge_errors(self._errors, self._examples, outcome.errors)
            self.record.top_errors = top_errors(self._errors, self._examples)
            self._write()

    def placed(self, actors: int) -> None:
        with self._lock:
            self.record.model_actors = actors

    def grouped(self, groups: list[int]) -> None:
        """Model i decodes in group ``groups[i]``: the record lists the models of each group."""
        with self._lock:
            self.record.decode_groups = [[i for i, g in enumerate(groups) if g == group]
                                         for group in range(max(groups, default=-1) + 1)]

    def timed(self, name: str, seconds: float) -> None:
        """Add ``seconds`` to the record's timing ``name`` (an attempt may run several rounds)."""
        with self._lock:
            self.record.timings[name] = round(self.record.timings.get(name, 0.0) + seconds, 3)

    def ran_on(self, tasks_per_node: dict[str, dict[str, int]]) -> None:
        with self._lock:
            self.record.tasks_per_node = tasks_per_node

    def stages(self, seconds: dict[str, float], model_busy_s: float) -> None:
        """The seconds of work per stage, and the share of the inference time the model actors were busy."""
        with self._lock:
            self.record.stage_seconds = seconds
            inference_s = self.record.timings.get("inference_s")
            if self.record.model_actors and inference_s:
                self.record.model_busy = round(min(1.0, model_busy_s / (self.record.model_actors * inference_s)), 3)

    def dropped(self, shard: int) -> None:
        """Another run labeled some of ``shard``'s items first: it was not committed."""
        with self._lock:
            self.record.pending = [p for p in self.record.pending if p.shard != shard]
            self.record.conflicts += 1

    def finished(self) -> RunRecord:
        with self._lock:
            self.record.status, self.record.error = records.COMMITTED, None
            return self._end()

    def failed(self, exc: BaseException) -> RunRecord:
        """The attempt stops on ``exc``. A fenced attempt writes nothing more: whoever fenced it
        finishes its record from the log."""
        with self._lock:
            self.record.status = records.FAILED
            self.record.error = storage.redact(str(exc)) or type(exc).__name__
            if isinstance(exc, Fenced):
                self.record.finished_at = records.now(self.host.clock())
                return self.record
            return self._end()

    def check(self) -> None:
        """Raise if the heartbeat stopped this attempt."""
        if self._stopped is not None:
            raise (Fenced if "fenced" in self._stopped else RunFailed)(self._stopped)

    # --- heartbeat -------------------------------------------------------------------------------

    @contextmanager
    def heartbeat(self, table: Table, every_s: float = HEARTBEAT_S) -> Iterator[None]:
        """Beat in the background while the block runs (``table``: a predictions snapshot of the
        heartbeat's own, refreshed before each beat)."""
        stop = threading.Event()
        thread = threading.Thread(target=self._beat_until, args=(stop, table, every_s),
                                  name="run-record-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def _beat_until(self, stop: threading.Event, table: Table, every_s: float) -> None:
        while not stop.wait(every_s):
            if not self.beat(table):
                _thread.interrupt_main()  # the driver may be waiting on the pipeline: wake it
                return

    def beat(self, table: Table) -> bool:
        """One heartbeat; False when the attempt must stop (fenced, or silent for too long)."""
        try:
            table.refresh()
            check_owner(table, self.attempt)
            with self._lock:
                self._write()
            self._last_beat = self.host.clock()
            return True
        except Fenced as exc:
            self._stopped = str(exc)
            return False
        except Exception as exc:  # noqa: BLE001 - a beat that fails is logged and retried; only its duration counts
            silent = self.host.clock() - self._last_beat
            log.warning("run %s: the heartbeat could not be written (%s); silent for %.0f s",
                        self.record.run_id, storage.redact(f"{type(exc).__name__}: {exc}"), silent)
            if silent < HEARTBEAT_GIVE_UP_S:
                return True
            self._stopped = (f"run {self.record.run_id} stopped: its heartbeat could not be written for "
                             f"{silent:.0f} s, so other runs would soon judge it dead; the shards it committed "
                             "stay. Check the output's storage, then run the same command again")
            return False

    # --- writing ---------------------------------------------------------------------------------

    def _write(self) -> None:
        records.write(self.layout.runs, self.record, clock=self.host.clock())

    def _end(self) -> RunRecord:
        self.record.finished_at = records.now(self.host.clock())
        self._write()
        return self.record
