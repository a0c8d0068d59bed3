"""Shared fixtures: a real S3 endpoint (moto's server on 127.0.0.1) and a real local Ray.

Credentials for the test endpoint go into the process environment before Ray starts, so
worker processes reach S3 exactly as they would in production: through the AWS chain.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator

import pytest

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
    """A short TMPDIR for a subprocess's private Ray (Unix socket paths must stay under 108 bytes)."""
    path = tempfile.mkdtemp(prefix="gp-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_local(s3_endpoint) -> Iterator[None]:
    """One private local Ray per test module (2 CPUs, small object store, loopback IP).

    Started after the S3 endpoint so that its workers inherit the AWS environment.
    """
    import ray

    temp_dir = tempfile.mkdtemp(prefix="gp-ray-")
    ray.init(
        address="local",
        num_cpus=2,
        object_store_memory=400 * 2**20,
        include_dashboard=False,
        _temp_dir=temp_dir,
        _node_ip_address="127.0.0.2",
        logging_level="WARNING",
    )
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


# The tiers (`make test-fast` runs `unit` only): a test is `ray` when it starts a Ray (the module's
# private one, a CLI run's, or the demo's), `s3` when it talks to the S3 endpoint, `cluster` when
# it starts several nodes; the rest is `unit`. Modules that start Ray or take minutes without a
# fixture saying so are named here.
_STARTS_RAY = {"ray_local", "ray_tmp", "ray_cluster"}
_TALKS_S3 = {"s3_endpoint", "s3fs_client", "bucket"}
_RAY_MODULES = {"test_demo.py"}
_SLOW_MODULES = {"test_compile.py", "test_train.py", "test_gpu_carry.py"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        name = item.path.name
        if fixtures & _STARTS_RAY or name in _RAY_MODULES:
            item.add_marker(pytest.mark.ray)
        if fixtures & _TALKS_S3:
            item.add_marker(pytest.mark.s3)
        if name in _SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
        tiered = {"ray", "s3", "cluster", "slow"} & {m.name for m in item.iter_markers()}
        if not tiered:
            item.add_marker(pytest.mark.unit)


_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave with pytest's own exit status once its summary is out, skipping the interpreter's
    teardown: a run of the whole suite here (400 passed) once ended in a segmentation fault after
    the summary, inside the finalization of the C extensions that in-process Ray sessions, DuckDB
    and Arrow leave behind, which no test can see and which would turn a green suite red."""
    if _EXIT_STATUS and os.environ.get("GHOSTNET_TEST_TEARDOWN") != "full":
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[0])
