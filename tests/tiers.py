"""What keeps the `unit` tier honest: while a unit test runs (its fixtures included), starting a Ray,
running Python in a process of its own or opening a TCP connection fails it, with the tier it
belongs to. Watched through CPython's audit hooks (``subprocess.Popen``, ``os.exec``,
``os.posix_spawn``, ``os.system``, ``socket.connect``), so no list of file names has to be kept.

A test that catches the failure (``except BaseException``) is still failed by its report.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

# The tiers besides `unit`, each a marker in pyproject.toml.
OTHER_TIERS = ("subprocess", "s3", "ray", "cluster", "slow")
# The discard port: tests use it as an address where no server listens (a refused connection).
NO_SERVER = ("127.0.0.1", 9)

_RAY_PROGRAMS = {"gcs_server", "raylet", "ray"}
_CLI_COMMANDS_WITH_RAY = {"run", "nightly", "demo", "train"}
_MISPLACED = pytest.StashKey[str]()
_active: list[pytest.Item] = []


def _argv(event: str, args: tuple) -> list[str]:
    """The command line of a process about to start: ``os.system`` gives a shell line; the others
    (executable or path, argv, ...) an argv (Popen's is the shell's own for ``shell=True``)."""
    if event == "os.system":
        return str(args[0]).split()
    command = args[1]
    if isinstance(command, (str, bytes, os.PathLike)):
        return [os.fsdecode(command)]
    return [os.fsdecode(a) if isinstance(a, (bytes, os.PathLike)) else str(a) for a in command or ()]


def _why_not_unit(argv: Sequence[str]) -> str | None:
    """The tier a process with this command line puts a test in, and why; None if a unit test may
    start it (a shell, git, promtool: programs that are neither Ray nor Python)."""
    if not argv:
        return None
    program = Path(argv[0]).name
    shown = " ".join(argv)[:160]
    if program in _RAY_PROGRAMS or any("ray/_private/" in a or "ray/dashboard/" in a for a in argv):
        return (f"starts a Ray ({shown}): give it the ray_local fixture (tier `ray`), or mark it `cluster` "
                "if it starts several nodes")
    if program.startswith("python") or program == "ghostnet-pipeline" or argv[0] == sys.executable:
        why = f"runs Python in a process of its own ({shown}): mark it `subprocess`"
        if _CLI_COMMANDS_WITH_RAY & set(argv):
            why += ", or give it the ray_tmp fixture (tier `ray`) if that command starts a Ray"
        return why
    return None


def _why_connect_is_not_unit(address: object) -> str | None:
    if not (isinstance(address, tuple) and len(address) >= 2) or tuple(address[:2]) == NO_SERVER:
        return None  # a Unix socket, or the address where nothing listens
    host, port = address[0], address[1]
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    if endpoint.endswith(f":{port}"):
        return f"talks to the S3 endpoint ({host}:{port}): give it the bucket or s3_endpoint fixture (tier `s3`)"
    return (f"opens a TCP connection to {host}:{port}: a unit test talks to no server; the S3 endpoint is tier "
            "`s3` (bucket fixture), a Ray `ray` (ray_local), a job server `cluster`")


def _audit(event: str, args: tuple) -> None:
    if not _active:
        return
    if event in ("subprocess.Popen", "os.exec", "os.posix_spawn", "os.system"):
        why = _why_not_unit(_argv(event, args))
    elif event == "socket.connect":
        why = _why_connect_is_not_unit(args[1])
    else:
        return
    if why is None:
        return
    item = _active[-1]
    message = f"{item.nodeid} is a `unit` test but {why}"
    item.stash.setdefault(_MISPLACED, message)
    raise pytest.fail.Exception(message, pytrace=False)


sys.addaudithook(_audit)


@contextmanager
def guard(item: pytest.Item) -> Iterator[None]:
    """Watch ``item``, a unit test, from its setup to its teardown."""
    _active.append(item)
    try:
        yield
    finally:
        _active.pop()


def fail_if_misplaced(item: pytest.Item, report: pytest.TestReport) -> None:
    """Fail the call report of a unit test that did what another tier is for, even if it caught
    the failure, or that has a Ray running when it ends (connected to, not started)."""
    if report.when != "call" or not item.get_closest_marker("unit"):
        return
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        item.stash.setdefault(_MISPLACED, f"{item.nodeid} is a `unit` test but has a Ray running: give it the "
                                          "ray_local fixture (tier `ray`)")
    message = item.stash.get(_MISPLACED, None)
    if message is not None and not report.failed:
        report.outcome = "failed"
        report.longrepr = message
