"""A multi-node Ray cluster on this machine for tests, started and stopped with the scripts in
``infra/local`` so that the tests exercise exactly what the operations guide tells people to run.

Ports are chosen free at start time (a whole block: GCS, job server, and every node's fixed and
worker ports), so two test sessions on one machine do not collide; nodes sit on 127.0.0.3, .4...
"""

from __future__ import annotations

import os
import random
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "infra" / "local"
WORKER_PORTS = 100  # per node; a test node starts a handful of workers
_PORT_RANGE = (20000, 32000)  # below Linux's ephemeral range (32768+), where clients bind


@dataclass(frozen=True)
class LocalCluster:
    state_dir: Path
    gcs_address: str
    dashboard_url: str
    temp_dir: Path
    node_ips: tuple[str, ...]

    def stop(self, grace_s: int = 5) -> None:
        stop(self.state_dir, grace_s=grace_s)


def _port_is_free(port: int) -> bool:
    # Ray's GCS and raylets listen on all interfaces, so a port counts as free only on 0.0.0.0.
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port_block(size: int, attempts: int = 50) -> int:
    """The first port of ``size`` consecutive free ports."""
    low, high = _PORT_RANGE
    for _ in range(attempts):
        base = random.randrange(low, high - size, 10)
        if all(_port_is_free(p) for p in range(base, base + size)):
            return base
    raise RuntimeError(f"no block of {size} free ports in {low}-{high}")


def read_state(state_dir: Path) -> dict[str, str]:
    """``cluster.env`` as written by start-cluster.sh (NAME=value, shell-quoted)."""
    state = {}
    for line in (state_dir / "cluster.env").read_text().splitlines():
        name, _, value = line.partition("=")
        state[name] = " ".join(shlex.split(value))
    return state


def port_block_size(workers: int) -> int:
    return 200 + (workers + 1) * WORKER_PORTS


def auth_env(token: str | None, home: Path) -> dict[str, str]:
    """The environment of a node or client of a cluster with Ray's token authentication when
    ``token`` is set (else none). HOME is private: Ray 2.60 turns token mode on by itself for
    anything that finds ``~/.ray/auth_token``, and writes that file when it makes a token."""
    if token is None:
        return {"RAY_AUTH_MODE": "disabled"}
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "HOME": str(home)}


def _env(state_dir: Path, auth_token: str | None = None) -> dict[str, str]:
    return {**os.environ, **auth_env(auth_token, state_dir), "RAY_USAGE_STATS_ENABLED": "0"}


def start(
    state_dir: Path,
    *,
    workers: int = 1,
    num_cpus: int = 1,
    object_store_mb: int = 256,
    worker_num_gpus: int = 0,
    worker_resources: str | None = None,
    auth_token: str | None = None,
    port_base: int | None = None,
    timeout_s: int = 150,
) -> LocalCluster:
    """Start a head and ``workers`` workers; whatever fails, nothing of it is left running.
    ``port_base``: the first of :func:`port_block_size` free ports (default: a block found free now);
    its second port is the job server's."""
    base = port_base or free_port_block(port_block_size(workers))
    command = [
        str(SCRIPTS / "start-cluster.sh"), "--state-dir", str(state_dir),
        "--workers", str(workers), "--num-cpus", str(num_cpus),
        "--object-store-mb", str(object_store_mb),
        "--gcs-port", str(base), "--dashboard-port", str(base + 1), "--port-base", str(base),
        "--worker-ports", str(WORKER_PORTS), "--worker-num-gpus", str(worker_num_gpus),
        "--ray", str(Path(sys.executable).parent / "ray"), "--timeout", str(timeout_s),
    ]
    if worker_resources:
        command += ["--worker-resources", worker_resources]
    try:
        done = subprocess.run(command, env=_env(state_dir, auth_token), capture_output=True, text=True,
                              timeout=timeout_s + 120)
    except subprocess.TimeoutExpired:
        stop(state_dir)
        raise
    if done.returncode != 0:
        stop(state_dir)  # the script cleans up after itself; this covers it being killed midway
        raise RuntimeError(f"start-cluster.sh failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    state = read_state(state_dir)
    return LocalCluster(
        state_dir=state_dir,
        gcs_address=state["GCS_ADDRESS"],
        dashboard_url=state["DASHBOARD_URL"],
        temp_dir=Path(state["TEMP_DIR"]),
        node_ips=tuple(state["NODE_IPS"].split()),
    )


def stop(state_dir: Path, *, grace_s: int = 5) -> None:
    """Stop the cluster recorded in ``state_dir``, by PID; raises if any of it survives."""
    done = subprocess.run(
        [str(SCRIPTS / "stop-cluster.sh"), "--state-dir", str(state_dir), "--grace", str(grace_s)],
        env=_env(state_dir), capture_output=True, text=True, timeout=grace_s + 120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"stop-cluster.sh failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


@contextmanager
def running(state_dir: Path, **options) -> Iterator[LocalCluster]:
    """A started cluster, stopped on the way out whatever happened inside."""
    cluster = start(state_dir, **options)
    try:
        yield cluster
    finally:
        cluster.stop()
