"""Random schedules: who takes part, who crashes where, whose clock is off by how much, how often
storage fails; running one against the real core on local disk; and shrinking one that fails.

A schedule is all data (:class:`Schedule`), made from its seed; the interleaving is drawn from the
same seed while it runs, so ``python -m tests.protocol.check --seed N`` replays schedule N exactly,
and a shrunk schedule replays from its JSON (``--schedule``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from pipeline.record import RunRecord
from tests.protocol import invariants, specs
from tests.protocol.sim import Actor, Sim
from tests.protocol.specs import MaintainerSpec, SweeperSpec, WriterSpec

__all__ = ["Result", "Schedule", "run_schedule", "shrink"]

MODELS = (("ghostnet_050", 0), ("ghostnet_050", 1))  # two identities: same architecture, other weights
# Half the writers label with an ordered pick of one to three of these (with the writer's seed): six
# identities that runs of one, two or three models share in part, in any position.
ARCHITECTURES = ("ghostnet_050", "ghostnet_100", "ghostnetv2_100")
MAINTENANCE = ("compact:predictions", "compact:channel_stats", "z_order:predictions", "checkpoint:predictions",
               "checkpoint:channel_stats", "vacuum:predictions", "vacuum:channel_stats")
HOSTS = ("host-a", "host-b", "host-c")
# Thousands of tiny tables: in memory where the machine has a tmpfs, as a test's scratch should be.
SCRATCH = os.environ.get("GHOSTNET_SCHEDULE_SCRATCH") or ("/dev/shm" if os.path.isdir("/dev/shm") else None)


@dataclass
class Schedule:
    seed: int
    writers: list[WriterSpec]
    sweepers: list[SweeperSpec] = field(default_factory=list)
    maintainers: list[MaintainerSpec] = field(default_factory=list)
    crash_at: dict[str, int] = field(default_factory=dict)  # actor -> its point where it dies
    skew_s: dict[str, float] = field(default_factory=dict)  # actor -> its host clock minus the storage's
    hosts: dict[str, str] = field(default_factory=dict)
    fault_p: float = 0.0  # chance that a write fails (before or after it happened)

    @classmethod
    def generate(cls, seed: int) -> Schedule:
        rng = random.Random(seed)
        actors = rng.randint(2, 5)
        writers: list[WriterSpec] = []
        sweepers: list[SweeperSpec] = []
        maintainers: list[MaintainerSpec] = []
        for i in range(actors):
            role = "writer" if i == 0 else rng.choices(("writer", "sweeper", "maintainer"), (5, 2, 2))[0]
            if role == "sweeper":
                sweepers.append(SweeperSpec(f"s{i}", rng.randint(1, 3), gap_s=round(rng.uniform(0, 1200), 1)))
            elif role == "maintainer" and not maintainers:
                maintainers.append(MaintainerSpec(f"m{i}", tuple(rng.choices(MAINTENANCE, k=rng.randint(1, 4))),
                                                  gap_s=round(rng.uniform(0, 1800), 1)))
            else:
                writers.append(_writer(rng, i, writers, random.Random(seed * 1_000_003 + i)))
        names = [a.name for a in (*writers, *sweepers, *maintainers)]
        return cls(
            seed=seed, writers=writers, sweepers=sweepers, maintainers=maintainers,
            crash_at={n: rng.randint(1, 40) for n in names if rng.random() < 0.3},
            skew_s={n: round(rng.uniform(-3600, 3600), 1) for n in names},
            hosts={n: rng.choice(HOSTS) for n in names},
            fault_p=0.0 if rng.random() < 0.5 else round(rng.uniform(0.01, 0.08), 3),
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        data = json.loads(text)
        return cls(seed=data["seed"], writers=[WriterSpec(**{**w, "also": tuple(w.get("also", ()))})
                                               for w in data["writers"]],
                   sweepers=[SweeperSpec(**s) for s in data["sweepers"]],
                   maintainers=[MaintainerSpec(m["name"], tuple(m["operations"]), m.get("gap_s", 0.0))
                                for m in data["maintainers"]],
                   crash_at=data["crash_at"], skew_s=data["skew_s"], hosts=data["hosts"], fault_p=data["fault_p"])


def _writer(rng: random.Random, i: int, earlier: list[WriterSpec], picker: random.Random) -> WriterSpec:
    """A writer drawn from ``rng``; its models from ``picker``, so that a seed draws the same
    schedule as before writers had several models, but for the models."""
    model, seed = rng.choice(MODELS)
    items = rng.randint(4, 10)
    start_s = 0.0 if i == 0 else round(rng.uniform(0, 2400), 1)
    reprocessing = [w for w in earlier if w.kind == "reprocess"]
    kind = rng.choices(("run", "nightly", "reprocess", "resume"), (4, 2, 3, 3 if reprocessing else 0))[0]
    if kind == "resume":
        resumed = rng.choice(reprocessing)
        return WriterSpec(f"w{i}", kind, resumed.model, resumed.seed, items, run_id=resumed.run_id,
                          files_per_shard=rng.randint(1, 2), start_s=start_s, also=resumed.also)
    also: tuple[str, ...] = ()
    if picker.random() < 0.5:
        model, *rest = picker.sample(ARCHITECTURES, picker.randint(1, 3))
        also = tuple(rest)
    return WriterSpec(f"w{i}", kind, model, seed, items, run_id=f"rp-{i}" if kind == "reprocess" else None,
                      files_per_shard=rng.randint(1, 2), start_s=start_s, also=also)


@dataclass
class Result:
    schedule: Schedule
    violations: list[str]
    outcomes: dict[str, str]
    endings: dict[str, int]  # how the actors ended: a writer's record status or exception, swept, maintained
    trace: list[str]
    faults: int
    crashes: int
    steps: int

    @property
    def ok(self) -> bool:
        return not self.violations


def implementation() -> ModuleType:
    """The implementation under test: this checkout's pipeline (:mod:`tests.protocol.world`), or
    the one before the fences (:mod:`tests.protocol.legacy`) when the legacy tool put it first."""
    from tests.protocol import world

    return world


def run_schedule(schedule: Schedule, output: str | None = None, *, under_test: ModuleType | None = None) -> Result:
    """Run ``schedule`` on a fresh output (``output``, a URI; else a folder on local disk), let every
    dead run be found, then check."""
    impl = under_test or implementation()
    workdir = Path(tempfile.mkdtemp(prefix="schedule-", dir=SCRATCH))
    root = output or str(workdir / "out")
    sim = Sim(random.Random(schedule.seed * 7919 + 1), root, workdir, fault_p=schedule.fault_p)
    patches = impl.install(sim)
    try:
        for spec in (*schedule.writers, *schedule.sweepers, *schedule.maintainers):
            _add(sim, root, spec, schedule, impl)
        sim.run()
        sim.finish()
        outcomes = {a.name: _describe(a.outcome) for a in sim.actors}
        endings = Counter(_ending(a.outcome) for a in sim.actors)
        facts = _facts(schedule, sim.actors)
        bugs = [f"{a.name} ended with {outcomes[a.name]}" for a in sim.actors
                if isinstance(a.outcome, BaseException) and not isinstance(a.outcome, impl.EXPECTED)]
        crashes = sum(a.crashed for a in sim.actors)
        _recover_everything(sim, root, impl)
        violations = bugs + invariants.check_all(root, facts, sim.violations)
        return Result(schedule, violations, outcomes, dict(endings), sim.trace, sim.faults, crashes, len(sim.trace))
    finally:
        patches.undo()
        shutil.rmtree(workdir, ignore_errors=True)


def _add(sim: Sim, root: str, spec: WriterSpec | SweeperSpec | MaintainerSpec, schedule: Schedule,
         impl: ModuleType) -> None:
    actor = Actor(spec.name, body=lambda: None, crash_at=schedule.crash_at.get(spec.name),
                  skew_s=schedule.skew_s.get(spec.name, 0.0), host=schedule.hosts.get(spec.name, HOSTS[0]))
    sim.add(actor)
    host = impl.host(sim, actor)
    body = {WriterSpec: impl.writer, SweeperSpec: impl.sweeper, MaintainerSpec: specs.maintainer}[type(spec)]
    actor.body = lambda: body(sim, root, spec, host)


def _recover_everything(sim: Sim, root: str, impl: ModuleType) -> None:
    """After the schedule: time passes, and one more run's start, with no faults, finds the dead."""
    sim.now += 3 * impl.STALE_AFTER_S
    sim.fault_p = 0.0
    sim.actors = []
    _add(sim, root, SweeperSpec("recovery", 1), Schedule(seed=0, writers=[]), impl)
    sim.run()
    sim.finish()
    [final] = sim.actors
    if isinstance(final.outcome, BaseException):
        sim.violations.append(f"the final recovery failed: {_describe(final.outcome)}")


def _facts(schedule: Schedule, actors: list[Actor]) -> invariants.Facts:
    facts = invariants.Facts()
    ended = {a.name: a.outcome for a in actors}
    for spec in schedule.writers:
        if spec.reprocess and spec.run_id:
            facts.reprocess_runs.add(spec.run_id)
        record = ended.get(spec.name)
        if not isinstance(record, RunRecord) or not record.committed or (record.error or "").startswith("night "):
            continue
        # A record of the tree before several models (tests/protocol/legacy.py) is its one model's.
        for model in getattr(record, "models", None) or [record]:
            where = {"model": model.model, "weights_sha256": model.weights_sha256}
            if spec.reprocess:
                where["run_id"] = record.run_id
            facts.promised.append((f"{spec.name} ({model.model})", where, specs.item_uris(spec.items)))
    return facts


def _ending(outcome: Any) -> str:
    if isinstance(outcome, RunRecord):
        return f"writer {outcome.status}"
    if isinstance(outcome, BaseException):
        return type(outcome).__name__
    if isinstance(outcome, list) and all(":" in str(o) for o in outcome) and outcome:
        return "maintainer done"
    return "sweeper done"


def _describe(outcome: Any) -> str:
    if isinstance(outcome, RunRecord):
        return f"{outcome.status} ({outcome.items} items, {outcome.shards_committed} shards)"
    if isinstance(outcome, BaseException):
        return f"{type(outcome).__name__}: {str(outcome)[:160]}"
    return repr(outcome)[:160]


def shrink(result: Result, *, budget: int = 60, under_test: ModuleType | None = None,
           still: Callable[[Result], bool] = lambda r: not r.ok) -> Result:
    """A smaller schedule that still fails (``still``: fails the same way): actors, crashes and
    faults taken away one at a time, and fewer items, as long as it does."""
    best = result
    for _ in range(budget):
        for candidate in _smaller(best.schedule):
            tried = run_schedule(candidate, under_test=under_test)
            if still(tried):
                best = tried
                break
        else:
            return best
    return best


def _smaller(schedule: Schedule) -> list[Schedule]:
    found = []
    for writer in schedule.writers:
        if len(schedule.writers) > 1 and not any(w.kind == "resume" and w.run_id == writer.run_id
                                                 for w in schedule.writers if w is not writer):
            found.append(dataclasses.replace(schedule, writers=[w for w in schedule.writers if w is not writer]))
    for sweeper in schedule.sweepers:
        found.append(dataclasses.replace(schedule, sweepers=[s for s in schedule.sweepers if s is not sweeper]))
    if schedule.maintainers:
        found.append(dataclasses.replace(schedule, maintainers=[]))
    for name in schedule.crash_at:
        found.append(dataclasses.replace(schedule, crash_at={k: v for k, v in schedule.crash_at.items() if k != name}))
    if schedule.fault_p:
        found.append(dataclasses.replace(schedule, fault_p=0.0))
    for i, writer in enumerate(schedule.writers):
        if writer.items > 2:
            smaller = dataclasses.replace(writer, items=writer.items - 2)
            found.append(dataclasses.replace(schedule, writers=[*schedule.writers[:i], smaller,
                                                                *schedule.writers[i + 1:]]))
    return found
