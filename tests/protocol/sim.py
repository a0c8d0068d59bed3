"""A deterministic simulation of the world a commit protocol lives in, in the spirit of
FoundationDB's simulation: several actors (writers, sweepers, a maintainer) run the real code in
threads, but only one runs at a time, and a seeded scheduler picks who goes on at every I/O.

Every call the code under test makes to storage or to a table passes a *point* (:meth:`Sim.point`):
there the actor parks until the scheduler picks it again, may crash (it stops and never comes back:
every later point raises :class:`Crash`), and a write may fail before it happens or after it
happened (the answer lost). Time is the simulation's: the scheduler advances a storage clock at
each step (sometimes by many minutes: a pause of the whole world), every write stamps the object
with it, and each actor's host clock is that clock plus the actor's skew.

The points are installed by patching the I/O functions of the implementation under test
(:class:`Patches`); the protocol's own code is not touched. What the simulation replaces is the
world: the heartbeat's timer thread (the beats are the real ``beat``, run when they are due at an
actor's points), the storage clock and host identities.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Actor", "Crash", "InjectedFault", "Sim"]

HEARTBEAT_S = 30.0
START = 1_800_000_000.0  # the storage clock at the start of every schedule (2027-01-15)


class Crash(BaseException):
    """The actor's process died here (a BaseException, as nothing in it may catch a crash)."""


class InjectedFault(OSError):
    """A storage request that failed, or whose success was not reported."""


@dataclass
class Actor:
    name: str
    body: Callable[[], Any]
    crash_at: int | None = None  # crash at this point (count of its points), if ever
    skew_s: float = 0.0
    host: str = ""
    pid: int = 0
    points: int = 0
    wake_at: float = START  # it sleeps until the clock reaches this
    crashed: bool = False
    done: bool = False
    outcome: Any = None  # what body returned, or the exception it raised
    beating: tuple[Any, Any] | None = None  # (RunState, Table) while its heartbeat runs
    last_beat: float = START
    in_beat: bool = False
    turn: threading.Event = field(default_factory=threading.Event)
    parked: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class Sim:
    """One schedule's world. ``rng`` drives every choice; the same seed replays the same schedule."""

    def __init__(self, rng: random.Random, root: str, work: Path, *, fault_p: float = 0.0, pause_p: float = 0.01,
                 step_s: float = 20.0) -> None:
        self.rng, self.root, self.work = rng, root, work  # the output's URI; local scratch for the actors
        self.fault_p, self.pause_p, self.step_s = fault_p, pause_p, step_s
        self.now = START
        self.mtimes: dict[str, float] = {}
        self.created: dict[str, str] = {}  # data file -> sha256 of what was first written there
        self.violations: list[str] = []
        self.actors: list[Actor] = []
        self.trace: list[str] = []
        self.faults = 0
        self._local = threading.local()

    # --- the actors' side -----------------------------------------------------------------------

    def actor(self) -> Actor | None:
        return getattr(self._local, "actor", None)

    def point(self, op: str, *, write: bool = False) -> str | None:
        """Called on every I/O of the code under test. Returns how a write fails (``"before"``:
        nothing happened; ``"after"``: it happened, the answer was lost), or None."""
        actor = self.actor()
        if actor is None:
            return None
        if actor.crashed:
            raise Crash(actor.name)
        if not actor.in_beat:
            actor.parked.set()
            actor.turn.wait()
            actor.turn.clear()
            actor.points += 1
            self.trace.append(f"{actor.name}:{op}")
            if actor.crash_at is not None and actor.points >= actor.crash_at:
                actor.crashed = True
                self.trace.append(f"{actor.name}:CRASH")
                raise Crash(actor.name)
            self._beat_if_due(actor)
        if write and self.fault_p and self.rng.random() < self.fault_p:
            self.faults += 1
            mode = self.rng.choice(("before", "after"))
            self.trace.append(f"{actor.name}:{op}:fault-{mode}")
            return mode
        return None

    def sleep(self, seconds: float) -> None:
        """The acting actor waits ``seconds`` of the simulation's time (a run that starts later, an
        analyst who comes back to the table an hour on)."""
        actor = self.actor()
        if actor is not None and seconds > 0:
            actor.wake_at = self.now + seconds
            self.point("sleep")

    def fail(self, op: str) -> InjectedFault:
        return InjectedFault(f"injected storage fault at {op}: 503 Service Unavailable")

    # --- wrappers that make an implementation's I/O functions into points ---------------------

    def passing(self, op: str, call: Callable[..., Any]) -> Callable[..., Any]:
        """``call``, parked at a point first."""
        def passed(*args: Any, **kwargs: Any) -> Any:
            self.point(op)
            return call(*args, **kwargs)
        return passed

    def failing(self, op: str, call: Callable[..., Any]) -> Callable[..., Any]:
        """``call``, a write: parked at a point first, and it may fail before it happens or after."""
        def written(*args: Any, **kwargs: Any) -> Any:
            fault = self.point(op, write=True)
            if fault == "before":
                raise self.fail(op)
            result = call(*args, **kwargs)
            if fault == "after":
                raise self.fail(op)
            return result
        return written

    def storing(self, op: str, put: Callable[[str, bytes], None], exists: Callable[[str], bool], *,
                create: bool) -> Callable[[str, bytes], None]:
        """``put(uri, data)``, a write that stamps the object with the storage clock and is checked
        never to write an existing data file (``create``: the call refuses existing objects itself)."""
        def stored(uri: str, data: bytes) -> None:
            existed = not create and exists(uri)
            put(uri, data)
            self.stamp(uri)
            self.written(uri, data, existed=existed)
        return self.failing(op, stored)

    def _beat_if_due(self, actor: Actor) -> None:
        if actor.beating is None or self.now - actor.last_beat < HEARTBEAT_S:
            return
        state, table = actor.beating
        actor.in_beat = True
        try:
            state.beat(table)
        finally:
            actor.in_beat = False
        actor.last_beat = self.now

    @contextlib.contextmanager
    def heartbeat(self, state: Any, table: Any) -> Iterator[None]:
        """The heartbeat's timer, replaced: while the block runs, ``state.beat(table)`` runs at the
        actor's points whenever a beat is due by the simulation's clock."""
        actor = self.actor()
        if actor is None:
            yield
            return
        actor.beating, actor.last_beat = (state, table), self.now
        try:
            yield
        finally:
            actor.beating = None

    def host_clock(self) -> float:
        actor = self.actor()
        return self.now + (actor.skew_s if actor is not None else 0.0)

    def alive(self, host: str, pid: int) -> bool:
        """Is process ``pid`` on ``host`` alive (what ``kill -0`` would say there)?"""
        return any(a.host == host and a.pid == pid and not a.crashed and not a.done for a in self.actors)

    # --- storage timestamps and immutability ----------------------------------------------------

    def stamp(self, uri: str) -> None:
        self.mtimes[uri] = self.now

    def modified(self, uri: str, exists: bool) -> float:
        if not exists:
            raise FileNotFoundError(uri)
        return self.mtimes.get(uri, START)

    def written(self, uri: str, data: bytes, *, existed: bool) -> None:
        """A data file was written: an existing one must never be written again."""
        if not uri.endswith(".parquet"):
            return
        if existed or uri in self.created:
            self.violations.append(f"data file overwritten: {uri.removeprefix(self.root)}")
        self.created.setdefault(uri, hashlib.sha256(data).hexdigest())

    # --- the scheduler's side -------------------------------------------------------------------

    def add(self, actor: Actor) -> None:
        actor.pid = actor.pid or 1000 + len(self.actors)
        self.actors.append(actor)

    def run(self, max_steps: int = 4000) -> None:
        for actor in self.actors:
            actor.thread = threading.Thread(target=self._run_actor, args=(actor,), daemon=True, name=actor.name)
            actor.thread.start()
        for actor in self.actors:
            self._wait_parked(actor)
        for _ in range(max_steps):
            waiting = [a for a in self.actors if not a.done]
            if not waiting:
                return
            ready = [a for a in waiting if a.wake_at <= self.now]
            if not ready:
                self.now = min(a.wake_at for a in waiting)
                continue
            actor = self.rng.choice(ready)
            if self.rng.random() < self.pause_p:
                self.now += self.rng.uniform(300, 1500)  # the world stood still for minutes
                self.trace.append(f"pause:{self.now - START:.0f}")
            self.now += self.rng.uniform(0, self.step_s)
            actor.turn.set()
            self._wait_parked(actor)
        raise RuntimeError(f"schedule did not end in {max_steps} steps: {[a.name for a in self.actors if not a.done]}")

    def _run_actor(self, actor: Actor) -> None:
        self._local.actor = actor
        actor.parked.set()
        actor.turn.wait()
        actor.turn.clear()
        try:
            actor.outcome = actor.body()
        except BaseException as exc:  # noqa: BLE001 - the outcome is what the checker reads
            actor.outcome = exc
        finally:
            actor.done = True
            self._local.actor = None
            actor.parked.set()

    def _wait_parked(self, actor: Actor) -> None:
        if not actor.parked.wait(timeout=120):
            raise RuntimeError(f"actor {actor.name} is stuck outside a point")
        actor.parked.clear()

    def finish(self) -> None:
        for actor in self.actors:
            if actor.thread is not None:
                actor.thread.join(timeout=10)


class Patches:
    """Attribute patches, undone in reverse order."""

    def __init__(self) -> None:
        self._undo: list[tuple[object, str, Any]] = []

    def set(self, owner: object, name: str, value: Any) -> None:
        self._undo.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    def undo(self) -> None:
        while self._undo:
            owner, name, value = self._undo.pop()
            setattr(owner, name, value)
