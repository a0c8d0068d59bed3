"""Who may commit for a run: attempts, claims and fences, all in the predictions table's log.

Every process that writes for a run is an *attempt* with a random token. The run's application id
``ghostnet-pipeline:run:<run_id>`` in the predictions log names its owner: each shard commit of an
attempt carries that id set to the attempt's own version, after checking that it still holds it
(a fresh run's first attempt holds a run whose id is not set yet). So:

- a resume (``--reprocess --resume``) *claims* the run: it commits the id set to its version, which
  fences every earlier attempt;
- another run that judges this one dead *fences* it: it commits the id set to a version no attempt
  has, and only then deletes what the run left (:mod:`pipeline.recovery`);
- a fenced attempt's next commit finds the id changed, or collides with the fence (two commits
  from one snapshot that set the same application id: the second fails), and stops with
  :class:`Fenced`, never adding a file.

Liveness is judged by the storage's clock alone (:func:`age`): how long ago, by the store's own
timestamps, a run's live record was last written. Host clocks never enter it.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline import storage
from pipeline.errors import RunFailed, UsageError
from pipeline.tables import ConcurrentCommit, Table, app_id

__all__ = ["STALE_AFTER_S", "Attempt", "Fenced", "Host", "age", "check_owner", "claim", "fence", "run_app"]

STALE_AFTER_S = 600.0  # a live record this old by the storage's clock belongs to a dead run
COMMIT_ATTEMPTS = 20


class Fenced(RunFailed):
    """Another process fenced this attempt (it judged the run dead, or a resume took it over)."""


@dataclass(frozen=True)
class Host:
    """The machine an attempt runs on: its name, this process, its clock (only ever used for the
    times a record shows, never to judge liveness) and whether a process of it is alive."""

    name: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    clock: Callable[[], float] = time.time

    def alive(self, pid: int) -> bool:
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


@dataclass(frozen=True)
class Attempt:
    """One process writing for one run: its files carry its token, its commits its version."""

    run_id: str
    token: str  # 12 hex digits

    @classmethod
    def new(cls, run_id: str) -> Attempt:
        return cls(run_id, secrets.token_hex(6))

    @property
    def version(self) -> int:
        return int(self.token, 16) or 1


def run_app(run_id: str) -> str:
    return app_id("run", run_id)


def check_owner(table: Table, attempt: Attempt) -> None:
    """Raise :class:`Fenced` unless ``attempt`` may commit for its run at ``table``'s version."""
    owner = table.app_version(run_app(attempt.run_id))
    if owner not in (None, attempt.version):
        raise Fenced(
            f"run {attempt.run_id} was fenced: another process took it over or judged it dead "
            f"(attempt {attempt.token} no longer holds it); nothing more of this attempt is committed. "
            "The shards it committed stay; run the same command again to go on"
        )


def claim(table: Table, attempt: Attempt, run_date: str) -> None:
    """Make ``attempt`` the run's owner (a resume), fencing every earlier attempt. A concurrent
    claim or fence of the same run is refused with :class:`UsageError`: one resume wins."""
    app = run_app(attempt.run_id)
    for _ in range(COMMIT_ATTEMPTS):
        table.refresh()
        if table.app_version(app) == attempt.version:
            return  # an earlier try landed though it reported a failure
        try:
            table.commit([], run_date=run_date, apps={app: attempt.version},
                         metadata={"run_id": attempt.run_id, "claim": attempt.token})
            return
        except ConcurrentCommit:
            table.refresh()
            if table.app_version(app) == attempt.version:
                return
            raise UsageError(
                f"--resume {attempt.run_id}: another process took that run over at the same moment; "
                "it goes on there. Run the command again once it ended if anything is left"
            ) from None
    raise RunFailed(f"could not claim run {attempt.run_id}: {COMMIT_ATTEMPTS} commits met concurrent ones")


def fence(table: Table, run_id: str, run_date: str, *, still_dead: Callable[[], bool]) -> int | None:
    """Fence every attempt of ``run_id``: commit its application id set to a fresh version. Returns
    that version, or None when the run showed it is alive meanwhile (``still_dead``)."""
    app = run_app(run_id)
    mine = secrets.randbits(62) | 1
    for _ in range(COMMIT_ATTEMPTS):
        table.refresh()
        if table.app_version(app) == mine:
            return mine
        try:
            table.commit([], run_date=run_date, apps={app: mine}, metadata={"run_id": run_id, "fence": str(mine)})
            return mine
        except ConcurrentCommit:
            if not still_dead():
                return None
    raise RunFailed(f"could not fence run {run_id}: {COMMIT_ATTEMPTS} commits met concurrent ones")


def age(live_record: str, now: float) -> float:
    """Seconds since ``live_record`` was last written, by the storage's own clock (``now`` is
    :func:`pipeline.storage.storage_now` of the same store)."""
    return now - storage.modified(live_record)
