"""``ghostnet-pipeline submit`` against a real Ray head under token authentication
(``RAY_AUTH_MODE=token``, as our KubeRay manifests set), started with ``infra/local/start-cluster.sh``
and stopped by PID: a job submitted before the head is up waits for it and runs with the right
token; a missing or wrong token is a usage error (exit 2, one line); a refusal is not retried.

The head, its nodes and every client get a private HOME: Ray 2.60 turns token mode on by itself
where ``~/.ray/auth_token`` exists, and writes that file when it makes a token.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from tests.jobs import cluster as local_cluster
from tests.output import committed

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
TOKEN = secrets.token_hex(32)
MODEL_ARGS = ["--model", "ghostnet_050", "--weights", "random", "--num-classes", "4"]
IMAGES = 6


@dataclass
class Head:
    url: str
    home: Path
    early: subprocess.Popen  # the submit started before the head
    early_stderr: list[str]  # its stderr lines read before the head was started
    output: Path


def submit_command(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "jobs.cli", "submit", "--address", url, *args]


def client_env(home: Path, **auth: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_")}
    return {**env, "HOME": str(home), **auth}


def run_job_args(images: Path, output: Path) -> list[str]:
    return ["--", "run", "--input", str(images), "--output", str(output), *MODEL_ARGS]


def read_until(stream, needle: str, timeout_s: float) -> list[str]:
    """Lines of ``stream`` up to the first holding ``needle``; fails after ``timeout_s``."""
    lines: list[str] = []

    def read() -> None:
        for line in stream:
            lines.append(line)
            if needle in line:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout_s)
    assert lines and needle in lines[-1], f"no {needle!r} within {timeout_s} s: {lines}"
    return lines


@pytest.fixture(scope="module")
def head(tmp_path_factory) -> Iterator[Head]:
    state_dir = tmp_path_factory.mktemp("token-head")
    images = tmp_path_factory.mktemp("images")
    for i in range(IMAGES):
        Image.new("RGB", (40 + 4 * i, 36), color=(30 * i, 220 - 30 * i, 90)).save(images / f"img_{i}.png")
    output = tmp_path_factory.mktemp("out")
    base = local_cluster.free_port_block(local_cluster.port_block_size(workers=0))
    url = f"http://127.0.0.1:{base + 1}"
    env = client_env(state_dir, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN)
    early = subprocess.Popen(submit_command(url, "--retry-for", "240", *run_job_args(images, output)),
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The head starts only once the submit has met the closed port and said it retries.
        early_stderr = read_until(early.stderr, "retrying", timeout_s=120)
        with local_cluster.running(state_dir, workers=0, num_cpus=2, object_store_mb=256,
                                   auth_token=TOKEN, port_base=base) as cluster:
            assert cluster.dashboard_url == url
            yield Head(url, state_dir, early, early_stderr, output)
    finally:
        if early.poll() is None:
            early.kill()
        early.wait()


def test_submit_started_before_the_head_retries_then_runs_with_the_right_token(head):
    out, rest = head.early.communicate(timeout=400)
    stderr = "".join(head.early_stderr) + rest
    assert head.early.returncode == 0, out + stderr
    assert "connect" in head.early_stderr[-1] and "--retry-for" in head.early_stderr[-1], stderr
    lines = out.splitlines()
    assert lines[-1] == f"job {lines[0]} SUCCEEDED"
    assert committed(str(head.output)).num_rows == IMAGES
    assert TOKEN not in out + stderr


@pytest.mark.parametrize("auth, refusal", [
    ({"RAY_AUTH_MODE": "token"}, "no token was sent"),
    ({"RAY_AUTH_MODE": "disabled"}, "no token was sent"),
    ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}, "the token it was sent is wrong"),
], ids=["token-mode-without-token", "auth-disabled", "wrong-token"])
def test_refused_credentials_exit_2_with_one_line(head, tmp_path, auth, refusal):
    done = subprocess.run(submit_command(head.url, *run_job_args(tmp_path, tmp_path / "out")), cwd=ROOT,
                          env=client_env(head.home, **auth), capture_output=True, text=True, timeout=240)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"submitting `run` to {head.url}",
        f"error: the cluster at {head.url} refused the credentials ({refusal}): set RAY_AUTH_MODE=token and "
        "RAY_AUTH_TOKEN to the cluster's token (or RAY_AUTH_TOKEN_PATH to a file holding it)",
    ]


def test_a_refusal_is_not_retried(head, tmp_path):
    # The same submission id twice: the head refuses the second (its agent's 400 inside a 500).
    env = client_env(head.home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN)
    job = ["--submission-id", "gp-twice", "--no-wait", *run_job_args(tmp_path / "missing", tmp_path / "out")]
    first = subprocess.run(submit_command(head.url, *job), cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=240)
    assert first.returncode == 0, first.stdout + first.stderr
    started = time.monotonic()
    second = subprocess.run(submit_command(head.url, *job), cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=240)
    assert second.returncode == 1, second.stdout + second.stderr
    assert "gp-twice already exists" in second.stderr
    assert "retrying" not in second.stderr
    assert time.monotonic() - started < 60  # not the two minutes of --retry-for
