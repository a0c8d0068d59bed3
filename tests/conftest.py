"""Shared fixtures: a real S3 endpoint (moto's server on 127.0.0.1) and a real local Ray.

Credentials for the test endpoint go into the process environment before Ray starts, so
worker processes reach S3 exactly as they would in production: through the AWS chain.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests import tiers

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

# A secret no output may contain; tests grep everything a run writes for it.
SECRET_KEY = "sk-test-" + secrets.token_hex(12)
ACCESS_KEY = "AKIATEST" + secrets.token_hex(4).upper()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on loopback, with the AWS environment pointing at it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    # werkzeug logs every request through a handler bound to the stderr of the test that made the
    # first one, which pytest closes after that test: each later request printed a logging error.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def s3fs_client(s3_endpoint):
    import s3fs

    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})


@pytest.fixture
def bucket(s3fs_client, request) -> str:
    """A fresh bucket per test."""
    name = "t-" + secrets.token_hex(6)
    s3fs_client.mkdir(name)
    return name


@pytest.fixture
def ray_tmp() -> Iterator[str]:
    """A short TMPDIR for a subprocess's private Ray (Unix socket paths must stay under 108 bytes).

    At the end, any process still running with it (a worker of a Ray whose raylet was killed, seen
    outliving it here) is killed: the test started it."""
    path = tempfile.mkdtemp(prefix="gp-", dir="/tmp")
    try:
        yield path
    finally:
        _kill_processes_with_tmpdir(path)
        shutil.rmtree(path, ignore_errors=True)


def _kill_processes_with_tmpdir(path: str) -> None:
    import psutil

    for process in psutil.process_iter():
        try:
            if process.environ().get("TMPDIR") == path:
                process.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue


@dataclass(frozen=True)
class LocalRay:
    metrics_port: int  # the node's Prometheus endpoint on 127.0.0.2, updated every half second
    address: str  # its GCS: a CLI in a process of its own joins it with --address, as a user's would


@pytest.fixture(scope="session")
def ray_local(s3_endpoint) -> Iterator[LocalRay]:
    """One private local Ray for every test in this process that asks for it (2 CPUs, small object
    store, loopback IP), started once: each start and shutdown costs seconds. Its tests run last
    (pytest_collection_modifyitems), so a test that starts its own Ray here (the demo) never finds
    this one running.

    Started after the S3 endpoint so that its workers inherit the AWS environment.
    """
    import ray

    temp_dir = tempfile.mkdtemp(prefix="gp-ray-")
    metrics_port = free_port()
    ray.init(
        address="local",
        num_cpus=2,
        object_store_memory=400 * 2**20,
        include_dashboard=False,
        _temp_dir=temp_dir,
        _node_ip_address="127.0.0.2",
        _metrics_export_port=metrics_port,
        _system_config={"metrics_report_interval_ms": 500},
        logging_level="WARNING",
    )
    try:
        yield LocalRay(metrics_port, ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


# The tiers (`make test-fast` runs `unit` only). A test is `ray` when it starts a Ray (the shared
# one, or a subprocess's through ray_tmp), `s3` when it talks to the S3 endpoint: both follow from
# its fixtures. `subprocess` (Python in a process of its own: the CLI or a probe), `cluster` and
# `slow` are marked in the test module. The rest is `unit`, and tests/tiers.py fails a unit test
# that does what another tier is for, naming the tier. Unit tests run first, before any session
# fixture has started a Ray or the S3 server that they could lean on without saying so.
_STARTS_RAY = {"ray_local", "ray_tmp", "ray_cluster"}
_TALKS_S3 = {"s3_endpoint", "s3fs_client", "bucket"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & _STARTS_RAY:
            item.add_marker(pytest.mark.ray)
        if fixtures & _TALKS_S3:
            item.add_marker(pytest.mark.s3)
        if not set(tiers.OTHER_TIERS) & {m.name for m in item.iter_markers()}:
            item.add_marker(pytest.mark.unit)
    items.sort(key=_run_order)


def _run_order(item: pytest.Item) -> int:
    """Unit tests first; the shared Ray's last, once nothing else in this process needs its own."""
    if item.get_closest_marker("unit"):
        return 0
    return 2 if "ray_local" in getattr(item, "fixturenames", ()) else 1


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    with tiers.guard(item) if item.get_closest_marker("unit") else contextlib.nullcontext():
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    tiers.fail_if_misplaced(item, outcome.get_result())


# How the test process ends. Ray 2.60 leaves C++ threads running after ray.shutdown() (its GCS
# client's io service and gRPC's pollers; a Ray Data run also leaves the core worker's io thread),
# and the C++ exit path that runs while they do is where Ray's own processes were seen to segfault
# (a core dump here: CoreWorkerProcess::HandleAtExit -> ~Publisher -> posting to an io_context
# being shut down). The suite's process segfaulted once on CI after "499 passed", with exit 139;
# that it crashed the same way is not shown (three full runs here did not crash).
# So a process in which those threads still run leaves with pytest's exit status right after
# pytest's own teardown, skipping the C++ exit handlers; one without them (make test-fast) goes
# through the interpreter's whole teardown. GHOSTNET_TEST_TEARDOWN=full always does, to look for
# the crash (python -X faulthandler prints every thread's stack if it comes).
RAY_THREADS_AFTER_SHUTDOWN = ("gcs_client_io_s", "worker.io")
_exit_status = pytest.StashKey[int]()


def ray_threads_left() -> list[str]:
    names = []
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/comm") as comm:
            names.append(comm.read().strip())
    return [name for name in names if name in RAY_THREADS_AFTER_SHUTDOWN]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_exit_status] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if os.environ.get("GHOSTNET_TEST_TEARDOWN") == "full" or not os.path.isdir("/proc/self/task"):
        return
    if _exit_status in config.stash and ray_threads_left():
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(config.stash[_exit_status])
