"""Faults with real processes: a model actor SIGKILLed mid-run, the driver SIGKILLed mid-run,
an S3 endpoint that throttles and errors, objects deleted between listing and reading."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pyarrow.dataset as pads
import pytest

from pipeline.config import RunConfig
from pipeline.run import run
from tests import corpus
from tests.s3_fault_proxy import FaultProxy

IMAGES = 60


def make_images(folder: Path, count: int = IMAGES) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        corpus.gradient(64 + i % 7, 48 + i % 5, seed=i).save(folder / f"img-{i:03d}.png")


def staged_batches(output: Path) -> int:
    return len(list(output.glob("_staging/*/channel_partials/*.parquet")))


def wait_for(condition, timeout_s: float = 300.0, every_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(every_s)


def predictions(output: Path):
    path = output / "predictions"
    if not path.exists():
        return None
    return pads.dataset(str(path), format="parquet", partitioning="hive").to_table()


def assert_exactly_once(output: Path, count: int) -> None:
    table = predictions(output)
    uris = table.column("uri").to_pylist()
    assert len(uris) == len(set(uris)) == count


def model_actor_processes() -> list[psutil.Process]:
    """Our own descendants whose title says they are the Predictor actor."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "MapBatches(Predictor)" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def cli(*args: str, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


class TestActorKilled:
    pytestmark = pytest.mark.usefixtures("ray_local")

    def test_sigkill_of_the_model_actor_mid_run_loses_and_duplicates_nothing(self, tmp_path):
        make_images(tmp_path / "in")
        output = tmp_path / "out"
        config = RunConfig(inputs=(str(tmp_path / "in"),), output=str(output), model="ghostnet_050",
                           weights="random", num_classes=5, batch_size=4, decode_batch_size=4)
        result: dict = {}
        runner = threading.Thread(target=lambda: result.update(r=run(config)))
        runner.start()
        wait_for(lambda: staged_batches(output) >= 2)
        victims = model_actor_processes()
        assert victims, "the model actor should be running"
        for victim in victims:
            victim.send_signal(signal.SIGKILL)
        runner.join(timeout=600)

        assert result["r"].committed and result["r"].items == IMAGES
        assert_exactly_once(output, IMAGES)
        stats = pads.dataset(str(output / "channel_stats"), partitioning="hive").to_table()
        assert set(stats.column("count").to_pylist()) == {IMAGES}, "retried batches counted once"


def kill_process_tree(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


@pytest.mark.parametrize("command", ["run", "nightly"])
def test_driver_killed_mid_run_leaves_nothing_visible_and_rerun_completes_once(tmp_path, ray_tmp, command):
    make_images(tmp_path / "in")
    output = tmp_path / "out"
    args = [command, "--input", str(tmp_path / "in"), "--output", str(output), "--model", "ghostnet_050",
            "--weights", "random", "--num-classes", "5", "--batch-size", "4"]
    if command == "nightly":
        args += ["--date", "2026-11-28"]
    # The driver runs in its own session with its private Ray under ray_tmp: killing the session
    # kills exactly the processes this test started.
    env = {"TMPDIR": ray_tmp}

    first = cli(*args, env=env, start_new_session=True)
    wait_for(lambda: staged_batches(output) >= 1 or first.poll() is not None)
    assert first.poll() is None, first.communicate()
    kill_process_tree(first)

    assert predictions(output) is None or predictions(output).num_rows == 0
    assert not list(output.glob("_runs/*.json"))
    second = cli(*args, env=env, start_new_session=True)
    _, err = second.communicate(timeout=900)
    assert second.returncode == 0, err[-3000:]
    assert_exactly_once(output, IMAGES)
    assert len(list(output.glob("_runs/*.json"))) == 1


def test_throttling_5xx_and_vanished_objects_on_s3(ray_tmp, s3_endpoint, s3fs_client, bucket):
    names = [f"photo-{i}.png" for i in range(8)] + ["vanish-me.png"]
    for i, name in enumerate(names):
        s3fs_client.pipe_file(f"{bucket}/in/{name}", corpus.encode(corpus.gradient(40, 30, seed=i), "PNG"))
    proxy = FaultProxy(s3_endpoint, throttle_first=True, error_every=7, vanish="vanish-me").start()
    try:
        done = cli("run", "--input", f"s3://{bucket}/in", "--output", f"s3://{bucket}/out",
                   "--model", "ghostnet_050", "--weights", "random", "--num-classes", "3",
                   "--max-error-rate", "0.5", env={"AWS_ENDPOINT_URL": proxy.endpoint, "TMPDIR": ray_tmp})
        _, err = done.communicate(timeout=900)
    finally:
        proxy.stop()

    assert done.returncode == 0, err[-3000:]
    assert proxy.injected["slowdown"] >= len(names) - 1 and proxy.injected["internal"] > 0
    rows = {Path(r["uri"]).name: r for r in
            pads.dataset(f"{bucket}/out/predictions", filesystem=s3fs_client, partitioning="hive").to_table()
            .to_pylist()}
    assert sorted(rows) == sorted(names)
    assert rows["vanish-me.png"]["status"] == "read_error"
    assert "not found" in rows["vanish-me.png"]["error"]
    assert all(rows[n]["status"] == "ok" for n in names if n != "vanish-me.png")
