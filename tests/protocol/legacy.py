"""The schedule checker against the commit protocol as it was before fencing (commit b2dde77, the
tree issue #23 was filed on): what it finds there, shrunk to the smallest schedules that still fail.

    python -m tests.protocol.legacy --seeds 0:400 [--ref b2dde77] [--json results.json]
    python -m tests.protocol.legacy --replay schedules.json      # each schedule's verdict on the old code

It checks that commit out into a temporary worktree and runs itself again with that tree's
``pipeline`` package first on the path (and this checkout's ``tests.protocol`` for the harness).
The adapter below drives the old code as its ``run()`` did, minus Ray: the same calls in the same
order (``_open_tables``, ``recovery.recover_dead_runs``, ``_run_id_and_date``, ``_plan``, the
``ShardCommitter`` fed by ``sink.write_files``, ``_fail`` and ``_finish``). The old code judged
liveness by comparing host clocks, so here the host clock of each actor is the simulation's plus
the actor's skew, as the new code's record timestamps are.

The findings become regression schedules in ``tests/protocol/regressions.json``, which the new
code must pass (``tests/protocol/test_schedules.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
REF = "b2dde77"  # main before issue #23's work: the protocol with wall-clock liveness, no fences


# --- the adapter (imported where the old pipeline is first on the path) ----------------------------


def _old() -> SimpleNamespace:
    """The old pipeline's modules (whatever ``pipeline`` is first on the path)."""
    modules = {"commit": "commit", "errors": "errors", "plans": "plan", "records": "record", "recovery": "recovery",
               "runs": "run", "sink": "sink", "storage": "storage", "tables": "tables"}
    return SimpleNamespace(**{alias: importlib.import_module(f"pipeline.{name}") for alias, name in modules.items()})


class _Clock:
    """``time`` for the old record module: its ``time()`` is the acting host's clock."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim

    def time(self) -> float:
        return float(self.sim.host_clock())


def install(sim: Any) -> Any:
    from tests.protocol.sim import Patches

    old = _old()
    storage, tables, records, runs = old.storage, old.tables, old.records, old.runs
    patches = Patches()
    original = {name: getattr(storage, name) for name in ("read_bytes", "write_bytes", "remove_file", "list_prefix",
                                                          "list_names", "exists", "list_files")}

    for name, op in (("read_bytes", "get"), ("remove_file", "delete"), ("list_prefix", "list"),
                     ("list_names", "list"), ("exists", "head"), ("list_files", "list")):
        patches.set(storage, name, sim.passing(op, original[name]))
    patches.set(storage, "write_bytes", sim.storing("put", original["write_bytes"], original["exists"], create=False))
    append = tables.append
    patches.set(tables, "open_table", sim.passing("table-open", tables.open_table))
    patches.set(tables, "append", lambda table, name, *args, **kwargs: sim.failing(
        f"commit-{name}", append)(table, name, *args, **kwargs))
    patches.set(records, "time", _Clock(sim))
    patches.set(records, "now", lambda: datetime.fromtimestamp(sim.host_clock(), timezone.utc).isoformat())
    patches.set(runs, "_heartbeat", lambda layout, record: sim.heartbeat(_Beat(layout, record, records), None))
    return patches


class _Beat:
    """The old heartbeat's body: rewrite the live record, whatever fails."""

    def __init__(self, layout: Any, record: Any, records: Any) -> None:
        self.layout, self.record, self.records = layout, record, records

    def beat(self, table: Any) -> bool:
        with contextlib.suppress(Exception):
            self.records.write(self.layout.runs, self.record)
        return True


class _Meta:
    labels = ("cat", "dog", "ship", "tree")


def host(sim: Any, actor: Any) -> Any:
    return actor


def writer(sim: Any, root: str, spec: Any, host: Any) -> Any:
    """The old ``run()`` for one modality, as it was, with the write stage fed directly."""
    from tests.protocol.specs import listing_batch

    old = _old()
    runs, records, recovery, plans = old.runs, old.records, old.recovery, old.plans
    sim.sleep(spec.start_s)
    config, kind = spec.config(root), "nightly" if spec.kind == "nightly" else "run"
    layout = old.tables.OutputLayout.of(root)
    model = spec.spec().pinned()
    work = sim.work / f"work-{spec.name}"
    listing = plans.spill_listing([listing_batch(spec.items)], work / "listing", ["image"])
    started = time.monotonic()
    runs._open_tables(layout)
    for _ in recovery.recover_dead_runs(layout):
        pass
    run_id, run_date = runs._run_id_and_date(config, layout, model, kind)
    if kind == "nightly" and (night := runs._committed_night(layout, run_date, model)):
        return runs._nothing(config, model, run_id, run_date, kind, f"night {run_date} is already committed by run "
                             f"{night}: nothing to add")
    identity = runs._identity(config, model, run_id=run_id, run_date=run_date)
    record = runs._new_record(config, model, _Meta(), identity, kind, listing)
    planned, known = runs._plan(config, layout, listing, identity, work / "image")
    runs._note_plan(record, planned)
    if planned.items == 0:
        record.status, record.error = records.COMMITTED, None
        return runs._finish(layout, record, started, write=bool(config.resume))
    records.write(layout.runs, record)
    with runs._heartbeat(layout, record):
        try:
            for _ in range(runs.REPLANS):
                conflicts = _execute(old, config, spec, planned, layout, identity, known, record)
                record.conflicts += conflicts
                if not conflicts:
                    break
                planned, known = runs._plan(config, layout, listing, identity, work / "image")
                if planned.items == 0:
                    break
                record.shards_total = record.shards_committed + len(planned.shards)
        except BaseException as exc:
            runs._fail(layout, record, exc)
            raise
    record.status = records.COMMITTED
    return runs._finish(layout, record, started)


def _execute(old: Any, config: Any, spec: Any, planned: Any, layout: Any, identity: Any, known: Any,
             record: Any) -> int:
    import pyarrow as pa

    from tests.protocol.specs import shard_rows

    records, sink, plans = old.records, old.sink, old.plans
    conflicts = 0

    def on_outcome(outcome: Any) -> None:
        nonlocal conflicts
        if not outcome.committed or outcome.record is None:
            conflicts += 1
            return
        record.add_shard(outcome.record)
        records.write(layout.runs, record)

    committer = old.commit.ShardCommitter(layout, planned, identity, max_error_rate=config.max_error_rate,
                                             known_files=known, on_outcome=on_outcome, started=time.monotonic())
    for shard in planned.shards:
        items = pa.concat_tables(plans.read_shard(shard.path, shard.items))
        cut = max(1, -(-items.num_rows // spec.files_per_shard))
        for start in range(0, items.num_rows, cut):
            rows = shard_rows(items.slice(start, cut), identity.model, identity.weights_sha256, identity.run_id)
            committer.add(sink.write_files(rows, table_uri=layout.table("predictions"), run_id=identity.run_id,
                                           run_date=identity.run_date, row_group_size=1000))
    committer.finish()
    return conflicts


def sweeper(sim: Any, root: str, spec: Any, host: Any) -> list[str]:
    old = _old()
    layout = old.tables.OutputLayout.of(root)
    finished: list[str] = []
    for _ in range(spec.passes):
        sim.sleep(spec.gap_s)
        finished += old.recovery.recover_dead_runs(layout)
    return finished


def _expected() -> tuple[type[BaseException], ...]:
    from tests.protocol.sim import Crash, InjectedFault

    old = _old()
    return Crash, InjectedFault, old.errors.RunFailed, old.errors.UsageError


def __getattr__(name: str) -> Any:
    if name == "EXPECTED":
        return _expected()
    if name == "STALE_AFTER_S":
        return _old().recovery.STALE_AFTER_S
    raise AttributeError(name)


# --- the tool -------------------------------------------------------------------------------------


@contextlib.contextmanager
def old_tree(ref: str) -> Iterator[Path]:
    """``ref`` checked out aside, and a folder whose ``pipeline`` and ``ghostnet`` are that tree's."""
    with tempfile.TemporaryDirectory(prefix="legacy-") as scratch:
        tree = Path(scratch) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref], check=True,
                       capture_output=True)
        try:
            front = Path(scratch) / "front"
            front.mkdir()
            for package in ("pipeline", "ghostnet"):
                (front / package).symlink_to(tree / package)
            yield front
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False,
                           capture_output=True)


def hunt(seeds: range, *, workers: int = 2, shrink_budget: int = 40) -> dict:
    """In a process where the old pipeline comes first: run ``seeds``, sort the failures by the
    kinds of damage they did (a schedule may do several), and shrink the first of each kind to the
    smallest schedule that still does that kind."""
    import logging

    from tests.protocol import schedules
    from tests.protocol.check import run_seeds, summary

    logging.getLogger("ghostnet_pipeline").setLevel(logging.CRITICAL)
    module = sys.modules[__name__]
    started = time.monotonic()
    results = run_seeds(seeds, workers, under_test="tests.protocol.legacy")
    report = summary(results, time.monotonic() - started)
    kinds: dict[str, dict] = {}
    for result in results:
        for kind in _kinds(result.violations):
            kinds.setdefault(kind, {"seeds": [], "smallest": None})["seeds"].append(result.schedule.seed)
    for kind, found in kinds.items():
        first = next(r for r in results if r.schedule.seed == found["seeds"][0])
        small = schedules.shrink(first, budget=shrink_budget, under_test=module,
                                 still=lambda r, kind=kind: kind in _kinds(r.violations))
        found["smallest"] = {"schedule": json.loads(small.schedule.to_json()), "violations": small.violations,
                             "outcomes": small.outcomes, "trace": small.trace}
    report["by_kind"] = kinds
    return report


def replay(schedules_json: list[dict]) -> list[dict]:
    """Each schedule against the old pipeline: the kind of damage it does there, or "ok"."""
    import logging

    from tests.protocol import schedules

    logging.getLogger("ghostnet_pipeline").setLevel(logging.CRITICAL)
    module = sys.modules[__name__]
    verdicts = []
    for data in schedules_json:
        result = schedules.run_schedule(schedules.Schedule.from_json(json.dumps(data)), under_test=module)
        verdicts.append({"kinds": _kinds(result.violations), "violations": result.violations,
                         "requests": requests(result.trace)})
    return verdicts


def requests(trace: list[str]) -> dict[str, int]:
    """The storage and table calls of the schedule's actors (the final recovery's left out)."""
    counted: dict[str, int] = {}
    for step in trace:
        who, _, op = step.partition(":")
        if who != "recovery" and op and op != "sleep" and op != "CRASH" and not who.startswith("pause"):
            counted[op] = counted.get(op, 0) + 1
    return counted


KINDS = (("committed file overwritten", ("overwritten",)),
         ("the log adds a missing file", ("does not exist",)),
         ("a committed file damaged", ("bytes, the log says", "a reader fails")),
         ("items labeled again after maintenance", ("labeled again",)),
         ("an item twice in one run", ("several rows",)),
         ("items lost", ("have no row",)),
         ("two table ids", ("table ids",)),
         ("statistics behind their predictions", ("statistics count",)),
         ("a record disagrees with the log", ("its record", "live record")),
         ("an actor failed unexpectedly", ("ended with",)))


def _kinds(violations: list[str]) -> list[str]:
    """The kinds of damage the violations describe, in :data:`KINDS` order."""
    return [kind for kind, marks in KINDS if any(mark in v for v in violations for mark in marks)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0:400")
    parser.add_argument("--ref", default=REF)
    parser.add_argument("--replay", help="a JSON list of schedules: print each one's verdict on the old code")
    parser.add_argument("--json")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inside:
        if args.replay:
            print(json.dumps(replay(json.loads(Path(args.replay).read_text()))))
        else:
            start, stop = (int(x) for x in args.seeds.split(":"))
            print(json.dumps(hunt(range(start, stop)), indent=2))
        return 0
    with old_tree(args.ref) as front:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(front), str(ROOT)])}
        what = ["--replay", str(Path(args.replay).resolve())] if args.replay else ["--seeds", args.seeds]
        done = subprocess.run([sys.executable, "-m", "tests.protocol.legacy", *what, "--inside"],
                              env=env, cwd=front, capture_output=True, text=True, check=False)
    if done.returncode:
        print(done.stdout[-5000:], done.stderr[-5000:], file=sys.stderr)
        return done.returncode
    if args.replay:
        print(done.stdout)
        return 0
    if args.json:
        Path(args.json).write_text(done.stdout)
    report = json.loads(done.stdout)
    print(json.dumps({k: v for k, v in report.items() if k != "by_kind"}, indent=2))
    for kind, found in report["by_kind"].items():
        print(f"{kind}: {len(found['seeds'])} schedules, e.g. seed {found['seeds'][0]}; smallest: "
              f"{found['smallest']['violations'][:2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
