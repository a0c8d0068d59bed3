"""Joining a Ray cluster, or starting a private local one when no address is given."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import ray

from pipeline import logs

LOCAL_NODE_IP = "127.0.0.2"
KEEP_LOGS = "GHOSTNET_KEEP_RAY_LOGS"  # set: the private Ray's temp dir (its logs) stays after the run
METRICS_PORT = "GHOSTNET_METRICS_PORT"  # set: the private Ray serves Prometheus metrics on this port

START_ATTEMPTS = 2  # a private local Ray that fails to start is started once more

log = logging.getLogger("ghostnet_pipeline")


def object_store_bytes() -> int:
    """A quarter of the machine's memory, at most 4 GiB: room for the pipeline, not the machine."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(min(total // 4, 4 << 30))


@contextmanager
def connect(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[str]:
    """Join ``address`` (or ``RAY_ADDRESS``), or start a private local Ray; yields a description.

    The local Ray has its own temp dir, a loopback node IP, a bounded object store and token
    auth pinned off (unless ``RAY_AUTH_MODE`` says otherwise), so it neither joins nor
    disturbs another Ray on the same machine. It is shut down on exit.
    """
    if ray.is_initialized():
        yield "the Ray already connected in this process"
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=not logs.is_json())
        try:
            yield f"Ray cluster at {address}"
        finally:
            ray.shutdown()
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    temp_dir = _private_temp_dir()
    kwargs: dict[str, Any] = {}
    if platform.system() == "Linux":
        kwargs["_node_ip_address"] = LOCAL_NODE_IP
    if os.environ.get(METRICS_PORT):
        kwargs["_metrics_export_port"] = int(os.environ[METRICS_PORT])
    try:  # a start that fails also leaves no temp dir behind
        ray.init(
            address="local",
            num_cpus=num_cpus or os.cpu_count(),
            object_store_memory=object_store_bytes(),
            include_dashboard=False,
            _temp_dir=temp_dir,
            configure_logging=True,
            logging_level=logging.WARNING,
            log_to_driver=not logs.is_json(),  # JSON logs: the workers' lines stay in Ray's log files
            **kwargs,
        )
        yield f"a local Ray ({num_cpus or os.cpu_count()} CPUs, temp dir {temp_dir})"
    finally:
        ray.shutdown()
        if os.environ.get(KEEP_LOGS):
            log.warning("kept the private Ray's logs in %s (%s is set)", temp_dir, KEEP_LOGS)
        else:
            shutil.rmtree(temp_dir, ignore_errors=True)


@contextmanager
def starting(address: str | None = None, *, num_cpus: int | None = None,
             warm: tuple[str, ...] = ()) -> Iterator[Callable[[], str]]:
    """:func:`connect`, begun in the background: yields ``join``, which waits until Ray is up and
    returns connect's description, so that Ray's start overlaps what the driver does meanwhile
    (listing, loading the model, opening the tables).

    Ray is started, and at the end shut down, by a thread that lives as long as the session: the
    processes of a local Ray die with the thread that started them (their parent-death signal).
    Once Ray is up, one task per CPU imports the modules named in ``warm`` in the idle workers,
    which Ray then gives to the run's actors and tasks: their start no longer waits for torch.
    Leaving the block before ``join`` (an error in the checks) still waits for the start to end.
    """
    if ray.is_initialized():
        yield lambda: "the Ray already connected in this process"
        return
    session = _Background(address, num_cpus, warm)
    try:
        yield session.join
    finally:
        session.close()


class _Background:
    def __init__(self, address: str | None, num_cpus: int | None, warm: tuple[str, ...]) -> None:
        self._address, self._num_cpus = address, num_cpus
        self._warm = warm
        self._up, self._done = threading.Event(), threading.Event()
        self._description: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="ray-session", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            for attempt in range(1, START_ATTEMPTS + 1):
                try:
                    self._session()
                    return
                except Exception as exc:
                    if self._description is not None or attempt == START_ATTEMPTS:
                        raise
                    # On a machine loaded to many times its cores, Ray's raylet can miss the 30 s Ray
                    # gives it to register (seen with a load average of 30 on 2 cores).
                    log.warning("Ray did not start (%s: %s); starting it once more", type(exc).__name__,
                                str(exc).strip()[:300])
                    ray.shutdown()
        except BaseException as exc:  # noqa: BLE001 - handed to the driver's thread by join()
            self._error = exc
        finally:
            self._up.set()

    def _session(self) -> None:
        with connect(self._address, num_cpus=self._num_cpus) as description:
            self._description = description
            if self._warm:
                _warm_workers(self._warm)
            self._up.set()
            self._done.wait()

    def join(self) -> str:
        self._up.wait()
        if self._error is not None:
            raise self._error
        if self._description is None:
            raise RuntimeError("the Ray session ended before it was joined")
        return self._description

    def close(self) -> None:
        self._done.set()
        self._thread.join()


def _warm_workers(modules: tuple[str, ...]) -> None:
    """One task per CPU of the cluster that imports ``modules``; not waited for."""
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    for _ in range(cpus):
        _import.options(num_cpus=0).remote(modules)


@ray.remote
def _import(modules: tuple[str, ...]) -> None:
    import importlib

    for module in modules:
        importlib.import_module(module)


def _private_temp_dir() -> str:
    # Ray's Unix sockets sit five levels below this folder and must fit in 107 bytes.
    base = tempfile.gettempdir()
    if len(base) > 32 and os.path.isdir("/tmp"):
        base = "/tmp"
    return tempfile.mkdtemp(prefix="ghostnet-ray-", dir=base)


def cluster_gpus() -> float:
    return float(ray.cluster_resources().get("GPU", 0.0))


def tasks_per_node(executed: ray.data.Dataset) -> dict[str, dict[str, int]]:
    """For each operator of an executed plan, how many of its tasks ran on each node (by node IP).

    Read from Ray Data's own block statistics (what ``Dataset.stats()`` sums up as "Tasks per
    node"); an actor pool's calls count as its tasks. Empty when this Ray keeps no such statistics.
    """
    executed = getattr(executed, "_write_ds", None) or executed
    executor = getattr(executed, "_current_executor", None)
    try:
        stats = executor.get_stats() if executor else executed._raw_stats()
    except AttributeError:
        return {}
    address = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
    placement: dict[str, dict[str, int]] = {}
    pending = [stats]
    while pending:
        level = pending.pop()
        pending += level.parents
        for operator, blocks in level.metadata.items():
            tasks = {(b.exec_stats.node_id, b.exec_stats.task_idx) for b in blocks if b.exec_stats}
            nodes = Counter(address.get(node, node) for node, task in tasks if task is not None)
            if nodes:
                placement[operator] = dict(sorted(nodes.items()))
    return placement
