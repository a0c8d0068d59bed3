"""Faults with real processes: a model actor SIGKILLed mid-run, the driver SIGKILLed between
writing a shard and committing it or right after a commit, an S3 endpoint that throttles and
errors, objects deleted between listing and reading.

Backs docs/reliability.md, "Faults", and docs/operations.md, "Resuming".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.config import RunConfig
from pipeline.failpoints import ENV as FAILPOINTS
from pipeline.run import run
from tests import corpus
from tests.output import committed, rows_per_run, run_records
from tests.s3_fault_proxy import FaultProxy

IMAGES = 60


def make_images(folder: Path, count: int = IMAGES) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        corpus.gradient(64 + i % 7, 48 + i % 5, seed=i).save(folder / f"img-{i:03d}.png")


def wait_for(condition, timeout_s: float = 300.0, every_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(every_s)


def assert_exactly_once(output: Path, count: int) -> None:
    table = committed(str(output))
    assert table.num_rows == pc.count_distinct(table["uri"]).as_py() == count


def items_in_channel_stats(output: Path) -> set[int]:
    """Per (layer, channel), the items the committed shards' sums count, added up."""
    stats = committed(str(output), "channel_stats")
    totals = stats.group_by(["layer", "channel"]).aggregate([("count", "sum")])
    return set(totals["count_sum"].to_pylist())


def raw_rows(output: Path) -> int:
    """What a raw Parquet glob over the table folder sees, committed or not."""
    return sum(pq.ParquetFile(p).metadata.num_rows for p in (output / "predictions").glob("run_date=*/*.parquet"))


def model_actor_processes() -> list[psutil.Process]:
    """Our own descendants whose title says they are the Predictor actor."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "MapBatches(ModelStage)" in " ".join(child.cmdline()):
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

    def test_sigkill_of_the_model_actor_mid_run_restarts_it_and_loses_and_duplicates_nothing(self, tmp_path):
        make_images(tmp_path / "in", 2 * IMAGES)
        output = tmp_path / "out"
        config = RunConfig(inputs=(str(tmp_path / "in"),), output=str(output), model="ghostnet_050",
                           weights="random", num_classes=5, batch_size=4, decode_batch_size=4, shard_size=5)
        result: dict = {}
        runner = threading.Thread(target=lambda: result.update(r=run(config)))
        runner.start()
        wait_for(lambda: any("__init__" not in " ".join(p.cmdline()) for p in model_actor_processes()))
        victims = model_actor_processes()
        assert victims, "the model actor should be running"
        killed = {v.pid for v in victims}
        for victim in victims:
            victim.send_signal(signal.SIGKILL)
        replacements: set[int] = set()
        while runner.is_alive():
            replacements |= {p.pid for p in model_actor_processes()} - killed
            time.sleep(0.2)

        assert replacements, "Ray started a new actor process for the rest of the run"
        assert result["r"].committed and result["r"].items == 2 * IMAGES
        assert result["r"].shards_committed == 2 * IMAGES // 5
        assert_exactly_once(output, 2 * IMAGES)
        assert items_in_channel_stats(output) == {2 * IMAGES}, "retried batches counted once"


def run_args(command: str, tmp_path: Path) -> list[str]:
    args = [command, "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--model", "ghostnet_050",
            "--weights", "random", "--num-classes", "5", "--batch-size", "4", "--shard-size", "10"]
    return args + (["--date", "2026-11-28"] if command == "nightly" else [])


@pytest.mark.parametrize(("command", "fault", "first_rows"), [
    ("run", "shard.after-commit=kill@3", 30),
    ("run", "shard.before-commit=kill@2", 10),
    ("nightly", "shard.after-commit=kill@2", 20),
])
def test_driver_killed_then_the_same_command_labels_only_the_rest(tmp_path, ray_tmp, command, fault, first_rows):
    """The driver and its private Ray are SIGKILLed (process group) right after a shard's commit, or
    between writing a shard's files and committing them. The same command then labels only what
    no shard committed; every item has exactly one row, told apart by run id in the Delta table, and
    a raw glob over the table folder sees committed rows only once the second run ended."""
    make_images(tmp_path / "in")
    output = tmp_path / "out"
    # The driver runs in its own session with its private Ray under ray_tmp: the fault kills exactly
    # the processes this test started.
    env = {"TMPDIR": ray_tmp}

    first = cli(*run_args(command, tmp_path), env={**env, FAILPOINTS: fault}, start_new_session=True)
    first.communicate(timeout=900)
    assert first.returncode == -signal.SIGKILL
    [dead] = run_records(str(output))
    assert dead.status == "running" and rows_per_run(str(output)) == {dead.run_id: first_rows}
    if fault.startswith("shard.before-commit"):
        assert raw_rows(output) > first_rows, "the killed shard's files were written, not committed"

    second = cli(*run_args(command, tmp_path), env=env, start_new_session=True)
    _, err = second.communicate(timeout=900)
    assert second.returncode == 0, err[-3000:]
    rest = (IMAGES - first_rows) // 10
    assert err.count("committed shard ") == rest, "in a log, one line per committed shard"
    assert f"({rest}/{rest}): 10 items" in err and "ETA" in err

    assert_exactly_once(output, IMAGES)
    records = {r.run_id: r for r in run_records(str(output))}
    rerun = next(r for r in records.values() if r.run_id != dead.run_id)
    assert rows_per_run(str(output)) == {dead.run_id: first_rows, rerun.run_id: IMAGES - first_rows}
    assert records[dead.run_id].status == "failed" and rerun.committed
    assert rerun.items_skipped == first_rows, "only the rest was labeled"
    assert raw_rows(output) == IMAGES, "the dead run's uncommitted files are gone"
    assert items_in_channel_stats(output) == {IMAGES}, "every committed shard has its statistics, once"


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
    rows = {Path(r["uri"]).name: r for r in committed(f"s3://{bucket}/out").to_pylist()}
    assert sorted(rows) == sorted(names)
    assert rows["vanish-me.png"]["status"] == "read_error"
    assert "not found" in rows["vanish-me.png"]["error"]
    assert all(rows[n]["status"] == "ok" for n in names if n != "vanish-me.png")


def test_a_reprocess_run_killed_mid_way_resumes_with_resume_run_id(tmp_path, ray_tmp):
    """docs/operations.md §6, Resuming: `run --reprocess` would start over; `--reprocess --resume
    RUN_ID` continues that run under its own id and labels only what it did not commit."""
    make_images(tmp_path / "in")
    output = tmp_path / "out"
    args = [*run_args("run", tmp_path), "--reprocess"]

    first = cli(*args, env={"TMPDIR": ray_tmp, FAILPOINTS: "shard.after-commit=kill@2"}, start_new_session=True)
    first.communicate(timeout=900)
    [dead] = run_records(str(output))
    resumed = cli(*args, "--resume", dead.run_id, env={"TMPDIR": ray_tmp}, start_new_session=True)
    _, err = resumed.communicate(timeout=900)

    assert first.returncode == -signal.SIGKILL and resumed.returncode == 0, err[-3000:]
    assert rows_per_run(str(output)) == {dead.run_id: IMAGES}, "one run id, every item once"
    assert_exactly_once(output, IMAGES)
    [record] = run_records(str(output))
    # One record per run, reconciled with the log: both attempts' shards, every item the run labeled.
    assert record.committed and record.items == IMAGES and record.rows == IMAGES and record.items_skipped == 0
    assert record.shards_committed == len(record.shards) == IMAGES // 10
    assert len({s.attempt for s in record.shards}) == 2, "the shards of the first attempt and of the resume"


class _ActorThatBreaks:
    def __call__(self, batch):
        from pipeline.errors import InternalError

        raise InternalError("an invariant broke in the model stage")


def test_an_internal_error_in_an_actor_reaches_the_driver_as_ours(ray_local):
    """docs/operations.md exit codes: a worker's InternalError (or RunFailed) reaches the CLI as
    itself, not as Ray's wrapping of it, so it is reported as a bug (exit 1, "please report it")
    and never as bad input or an unknown crash."""
    import ray

    from pipeline.errors import InternalError, raised_by_us
    from pipeline.stages import configure_data_context

    configure_data_context()
    dataset = ray.data.range(4).map_batches(_ActorThatBreaks, compute=ray.data.ActorPoolStrategy(size=1))
    with pytest.raises(Exception) as caught:
        dataset.take_all()

    ours = raised_by_us(caught.value)
    assert type(ours) is InternalError and str(ours) == "an invariant broke in the model stage"
    assert not isinstance(caught.value, InternalError) or hasattr(caught.value, "cause"), "Ray wrapped it"
