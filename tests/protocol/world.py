"""The implementation under test (this checkout's pipeline), wired into the simulation: its I/O
made into points, and the actors that drive it as a labeling run, a nightly run, a run that
reprocesses, a resume and another run's recovery would (the maintainer is :mod:`specs`').

A writer is :func:`pipeline.run.label` itself, the attempt a ``run`` or ``nightly`` command makes,
with an engine that writes each planned shard's rows through the real write stage
(:func:`pipeline.sink.write_files`) instead of decoding and running a model on Ray.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline import delta, recovery, runstate, sink, storage
from pipeline import plan as plans
from pipeline import run as runs
from pipeline.commit import CommitOutcome, RunIdentity
from pipeline.errors import RunFailed, UsageError
from pipeline.fencing import STALE_AFTER_S, Attempt, Host
from pipeline.plan import Plan
from pipeline.schema import MODELS
from pipeline.tables import OutputLayout
from tests.protocol.sim import Actor, Crash, InjectedFault, Patches, Sim
from tests.protocol.specs import SweeperSpec, WriterSpec, listing_batch, maintainer, shard_rows

__all__ = ["EXPECTED", "STALE_AFTER_S", "host", "install", "maintainer", "sweeper", "writer"]

EXPECTED = (Crash, InjectedFault, RunFailed, UsageError)  # how an actor may end, besides finishing


@dataclass(frozen=True)
class SimHost(Host):
    """A host of the simulation: its clock is the storage's plus the actor's skew, and whether a
    process of it is alive is the simulation's to say."""

    sim: Any = None

    def alive(self, pid: int) -> bool:
        return bool(self.sim.alive(self.name, pid))


def host(sim: Sim, actor: Actor) -> Host:
    return SimHost(name=actor.host, pid=actor.pid, clock=sim.host_clock, sim=sim)


def install(sim: Sim) -> Patches:
    """Make every storage and table call of the pipeline a point of ``sim``."""
    patches = Patches()
    original = {name: getattr(storage, name) for name in (
        "read_bytes", "write_bytes", "create_file", "remove_file", "list_prefix", "list_names", "size", "exists")}

    for name, op in (("read_bytes", "get"), ("remove_file", "delete"), ("list_prefix", "list"),
                     ("list_names", "list"), ("size", "head"), ("exists", "head")):
        patches.set(storage, name, sim.passing(op, original[name]))
    patches.set(storage, "write_bytes", sim.storing("put", original["write_bytes"], original["exists"], create=False))
    patches.set(storage, "create_file", sim.storing("create", original["create_file"], original["exists"], create=True))
    patches.set(storage, "modified", lambda uri: (sim.point("head"), sim.modified(uri, original["exists"](uri)))[1])
    patches.set(storage, "storage_now", lambda folder: (sim.point("clock"), sim.now)[1])
    commit = delta.DeltaLog.commit
    patches.set(delta, "open_table", sim.passing("table-open", delta.open_table))
    patches.set(delta.DeltaLog, "refresh", sim.passing("table-read", delta.DeltaLog.refresh))
    patches.set(delta.DeltaLog, "commit", lambda table, adds, **kwargs: sim.failing(
        f"commit-{table.name}", commit)(table, adds, **kwargs))
    patches.set(runstate.RunState, "heartbeat", lambda state, table, every_s=30.0: sim.heartbeat(state, table))
    return patches


def planned_rows(items: pa.Table, identity: RunIdentity) -> pa.Table:
    """What the model stage would hand the write stage for ``items`` (a piece of one shard, each with
    its plan's model mask): for each model of the run, a row of each item planned for it."""
    mask = items[MODELS].to_numpy()
    return pa.concat_tables([
        shard_rows(items.filter(pa.array(mask & (1 << i) != 0)), model.model, model.weights_sha256, identity.run_id,
                   position=i)
        for i, model in enumerate(identity.models) if np.any(mask & (1 << i))])


class DirectEngine:
    """Writes each planned shard's rows (all ``ok``; for each item, a row of each model its plan
    marks) through the real write stage, in ``files_per_shard`` files, as the Ray Data plan's write
    tasks would."""

    def __init__(self, layout: OutputLayout, files_per_shard: int) -> None:
        self.layout, self.files_per_shard = layout, files_per_shard

    def stream(self, planned: Plan, identity: RunIdentity, attempt: Attempt,
               state: runstate.RunState) -> Iterator[pa.Table]:
        for shard in planned.shards:
            items = pa.concat_tables(plans.read_shard(shard.path, shard.items))
            cut = max(1, -(-items.num_rows // self.files_per_shard))
            for start in range(0, items.num_rows, cut):
                rows = planned_rows(items.slice(start, cut), identity)
                yield sink.write_files(rows, table_uri=self.layout.table("predictions"), run_id=identity.run_id,
                                       attempt=attempt.token, run_date=identity.run_date,
                                       digests={shard.index: shard.digest}, row_group_size=1000)

    def committed(self, outcome: CommitOutcome) -> None:
        pass

    def close(self, state: runstate.RunState) -> None:
        pass


def writer(sim: Sim, root: str, spec: WriterSpec, host: Host) -> Any:
    """One command's attempt, start to end."""
    sim.sleep(spec.start_s)
    layout = OutputLayout.of(root)
    config = spec.config(root)
    tables_ = delta.open_tables(layout)
    work = sim.work / f"work-{spec.name}"
    listing = plans.spill_listing([listing_batch(spec.items)], work / "listing", ["image"])
    return runs.label(config, [s.pinned() for s in spec.specs()], kind="nightly" if spec.kind == "nightly" else "run",
                      layout=layout, tables_=tables_, listing=listing, work=work / "image", host=host, labels=4,
                      engine=lambda run_id, listing_s, plan_s: DirectEngine(layout, spec.files_per_shard))


def sweeper(sim: Sim, root: str, spec: SweeperSpec, host: Host) -> list[str]:
    """Another run's start on the output: it finishes the runs it judges dead."""
    layout = OutputLayout.of(root)
    finished: list[str] = []
    tables_ = None
    for _ in range(spec.passes):
        sim.sleep(spec.gap_s)
        tables_ = tables_ or delta.open_tables(layout)
        finished += recovery.recover_dead_runs(layout, tables_, host)
    return finished
