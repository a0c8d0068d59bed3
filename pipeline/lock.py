"""A lease on an output, so two nightly runs never interleave.

The lock is an object ``OUTPUT/_locks/<name>.json`` holding its owner (host, pid, token) and a
heartbeat that a background thread renews. It is free when absent, when its heartbeat is
older than ``stale_after_s`` (its owner died elsewhere), or when its owner is a dead process
on this host. Object stores have no atomic create, so taking it is write-then-read-back:
of two racing writers only the one whose token survives proceeds.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass

from pipeline import storage


class LockHeld(RuntimeError):
    """Another run holds the lock; the message names it."""


@dataclass
class Lease:
    uri: str
    token: str
    heartbeat_s: float
    _stop: threading.Event
    _thread: threading.Thread | None = None

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        if _read(self.uri).get("token") == self.token:
            storage.remove_tree(self.uri)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(
    uri: str,
    *,
    wait_s: float = 0.0,
    stale_after_s: float = 120.0,
    heartbeat_s: float = 15.0,
    settle_s: float = 0.5,
) -> Lease:
    """Take the lock at ``uri``, waiting up to ``wait_s`` for a live owner to finish."""
    deadline = time.monotonic() + wait_s
    while True:
        holder = _read(uri)
        if not holder or _is_stale(holder, stale_after_s):
            lease = _try_take(uri, heartbeat_s, settle_s)
            if lease:
                return lease
            holder = _read(uri)
        if time.monotonic() >= deadline:
            raise LockHeld(
                f"another run holds {uri}: {_describe(holder)}. Wait for it to finish (or pass --wait); "
                f"a lock whose owner died is taken over after {stale_after_s:.0f} s"
            )
        time.sleep(min(5.0, max(0.2, deadline - time.monotonic())))


def _try_take(uri: str, heartbeat_s: float, settle_s: float) -> Lease | None:
    token = secrets.token_hex(8)
    record = {"token": token, "host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
    _write(uri, record)
    time.sleep(settle_s)
    if _read(uri).get("token") != token:
        return None
    stop = threading.Event()
    lease = Lease(uri, token, heartbeat_s, stop)
    lease._thread = threading.Thread(target=_beat, args=(uri, record, stop, heartbeat_s), daemon=True)
    lease._thread.start()
    return lease


def _beat(uri: str, record: dict, stop: threading.Event, every_s: float) -> None:
    while not stop.wait(every_s):
        if _read(uri).get("token") != record["token"]:
            return
        _write(uri, record)


def _read(uri: str) -> dict:
    try:
        return json.loads(storage.read_bytes(uri))
    except (FileNotFoundError, ValueError):
        return {}


def _write(uri: str, record: dict) -> None:
    storage.write_bytes(uri, json.dumps({**record, "heartbeat": time.time()}).encode())


def _is_stale(holder: dict, stale_after_s: float) -> bool:
    if time.time() - float(holder.get("heartbeat", 0)) > stale_after_s:
        return True
    return holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", -1)))


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


def _describe(holder: dict) -> str:
    if not holder:
        return "an owner that just took it"
    age = time.time() - float(holder.get("since", time.time()))
    return f"pid {holder.get('pid')} on {holder.get('host')}, running for {age:.0f} s"
