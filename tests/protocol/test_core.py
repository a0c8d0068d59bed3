"""The commit protocol's promises one at a time, each on a real Delta table on local disk, driven
through the same attempt a run makes (:func:`pipeline.run.label`) with the checker's direct engine:
the hand-picked cases behind the random schedules of ``test_schedules.py``."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from pipeline import commit, delta, fencing, recovery
from pipeline import plan as plans
from pipeline import record as records
from pipeline.commit import RunIdentity
from pipeline.errors import RunFailed, UsageError
from pipeline.fencing import Attempt, Fenced, Host
from pipeline.record import RunRecord
from pipeline.run import label
from pipeline.runstate import HEARTBEAT_GIVE_UP_S, RunState
from pipeline.tables import OutputLayout
from tests.output import committed
from tests.protocol import specs
from tests.protocol.specs import RUN_DATE, WriterSpec, listing_batch, shard_rows
from tests.protocol.world import DirectEngine

ROOT = Path(__file__).resolve().parents[2]


def attempt_of(root: Path, spec: WriterSpec, *, engine: Callable[[OutputLayout], DirectEngine] | None = None,
               host: Host | None = None) -> RunRecord:
    """One command's attempt, as the schedules run it, without the scheduler."""
    layout = OutputLayout.of(str(root))
    work = root.parent / f"work-{spec.name}"
    shutil.rmtree(work, ignore_errors=True)
    listing = plans.spill_listing([listing_batch(spec.items)], work / "listing", ["image"])
    make = engine or (lambda layout: DirectEngine(layout, spec.files_per_shard))
    return label(
        spec.config(str(root)), [s.pinned() for s in spec.specs()], kind="nightly" if spec.kind == "nightly" else "run",
        layout=layout, tables_=delta.open_tables(layout), listing=listing, work=work / "image", host=host or Host(),
        labels=4, engine=lambda run_id, listing_s, plan_s: make(layout))


class Failing(DirectEngine):
    """Stops the attempt before any shard is written."""

    def stream(self, planned, identity, attempt, state) -> Iterator[pa.Table]:
        raise RunFailed("the first attempt stops")
        yield


class Interrupted(DirectEngine):
    """Writes the shards, and after the first one's files does ``meanwhile`` (what another process
    does at that moment)."""

    def __init__(self, layout: OutputLayout, meanwhile: Callable[[], None]) -> None:
        super().__init__(layout, 1)
        self.meanwhile = meanwhile

    def stream(self, planned, identity, attempt, state) -> Iterator[pa.Table]:
        for i, manifests in enumerate(super().stream(planned, identity, attempt, state)):
            yield manifests
            if i == 0:
                self.meanwhile()


def data_files(table: Path) -> set[str]:
    return {str(p.relative_to(table)) for p in table.rglob("*.parquet")}


def live_files(table: Path) -> set[str]:
    return set(pa.table(DeltaTable(str(table)).get_add_actions(flatten=True))["path"].to_pylist())


def test_a_fenced_attempt_stops_commits_nothing_more_and_leaves_no_file(tmp_path):
    root = tmp_path / "out"
    layout = OutputLayout.of(str(root))
    spec = WriterSpec("w", "reprocess", "ghostnet_050", 0, 9, run_id="fenced-run")

    def fence() -> None:  # another process judged it dead
        assert fencing.fence(delta.open_tables(layout).predictions, "fenced-run", RUN_DATE, still_dead=lambda: True)

    with pytest.raises(Fenced, match="was fenced"):
        attempt_of(root, spec, engine=lambda layout: Interrupted(layout, fence))

    rows = committed(str(root))
    assert rows.num_rows == 3, "the shard committed before the fence stays; none after"
    assert data_files(root / "predictions") == live_files(root / "predictions"), "no file left behind"
    assert records.load_live(layout.runs, "fenced-run") is not None, "its record is left to whoever fenced it"


def test_a_second_resume_is_refused_naming_the_live_attempt(tmp_path):
    root = tmp_path / "out"
    first = WriterSpec("a", "reprocess", "ghostnet_050", 0, 9, run_id="nightly-labels")
    with pytest.raises(RunFailed):
        attempt_of(root, first, engine=lambda layout: Failing(layout, 1))
    resume = WriterSpec("b", "resume", "ghostnet_050", 0, 9, run_id="nightly-labels")
    refused: list[BaseException] = []

    def second_resume() -> None:
        try:
            attempt_of(root, dataclasses.replace(resume, name="c"))
        except UsageError as exc:
            refused.append(exc)

    record = attempt_of(root, resume, engine=lambda layout: Interrupted(layout, second_resume))

    live_attempt = record.attempt
    assert refused and "still going" in str(refused[0]) and live_attempt in str(refused[0])
    assert record.committed and record.items == 9 and committed(str(root)).num_rows == 9


def test_liveness_follows_the_storage_clock_not_a_skewed_host(tmp_path):
    """A sweeper whose host clock runs 15 minutes ahead (libfaketime on its process) finds the live
    run alive: the record's age is read off the storage's timestamps, not compared with its clock."""
    if shutil.which("faketime") is None:
        pytest.skip("faketime is not installed (Debian: apt-get install faketime)")
    root = tmp_path / "out"
    layout = OutputLayout.of(str(root))
    tables_ = delta.open_tables(layout)
    record = RunRecord(run_id="live-run", kind="run", run_date=RUN_DATE, model="m", weights="random",
                       weights_sha256="w", modality="image")
    RunState(layout, record, Attempt.new("live-run"), Host(name="other-host")).planned(3, 1)
    sweep = ("import json, sys; from pipeline import delta, recovery; from pipeline.fencing import Host; "
             "from pipeline.tables import OutputLayout; layout = OutputLayout.of(sys.argv[1]); "
             "print(json.dumps(recovery.recover_dead_runs(layout, delta.open_tables(layout), Host())))")
    env = {**os.environ, "FAKETIME_FORCE_MONOTONIC_FIX": "0"}

    def sweeper(skew: str) -> list[str]:
        done = subprocess.run(["faketime", "-f", skew, sys.executable, "-c", sweep, str(root)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    assert sweeper("+15m") == [], "15 minutes ahead, it must not judge a live run dead"
    stale = os.path.getmtime(records.live_uri(layout.runs, "live-run")) - fencing.STALE_AFTER_S - 60
    os.utime(records.live_uri(layout.runs, "live-run"), (stale, stale))
    assert sweeper("-15m") == ["live-run"], "11 minutes silent by the storage's clock, it is dead"
    assert tables_.predictions.app_version(fencing.run_app("live-run")) is None
    tables_.predictions.refresh()
    assert tables_.predictions.app_version(fencing.run_app("live-run")) is not None, "fenced before swept"
    assert records.load_final(layout.runs, "live-run").status == "failed"


def test_files_an_analyst_compacted_across_models_still_count_as_labeled(tmp_path):
    root = tmp_path / "out"
    first = attempt_of(root, WriterSpec("a", "run", "ghostnet_050", 0, 9))
    other = attempt_of(root, WriterSpec("b", "run", "ghostnet_050", 1, 9))
    table = DeltaTable(str(root / "predictions"))
    table.optimize.compact()
    table.create_checkpoint()
    assert len(live_files(root / "predictions")) == 1, "one file now mixes both weights"

    again = attempt_of(root, WriterSpec("c", "run", "ghostnet_050", 0, 9))

    assert (first.items, other.items, again.items, again.items_skipped) == (9, 9, 0, 9)
    assert committed(str(root)).num_rows == 18


def test_a_run_that_runs_out_of_replans_fails_saying_what_is_left(tmp_path):
    root = tmp_path / "out"
    layout = OutputLayout.of(str(root))
    tables_ = delta.open_tables(layout)
    weights = WriterSpec("", "run", "ghostnet_050", 0, 0).spec().pinned().identity()
    rivals = iter(range(100))

    class Contested(DirectEngine):
        """Before each shard, another run of the same model commits one of its items."""

        def stream(self, planned, identity, attempt, state):
            for shard in planned.shards:
                first = pa.concat_tables(plans.read_shard(shard.path, shard.items)).slice(0, 1)
                rival = RunIdentity.single(f"rival-{next(rivals)}", RUN_DATE, "ghostnet_050", weights, reprocess=False)
                commit.write_and_commit(layout, tables_, rival, Attempt.new(rival.run_id), shard=shard.index,
                                        digest=f"{shard.index:016x}",
                                        rows=shard_rows(first, "ghostnet_050", weights, rival.run_id),
                                        stats=_stats(rival, 1))
            yield from super().stream(planned, identity, attempt, state)

    with pytest.raises(RunFailed, match=r"items are still not labeled after 3 rounds"):
        attempt_of(root, WriterSpec("w", "run", "ghostnet_050", 0, 10, shard_size=5),
                   engine=lambda layout: Contested(layout, 1))
    [record] = records.load_all(layout.runs)
    assert record.status == "failed" and record.items == 0 and record.conflicts == 6


def test_a_heartbeat_that_cannot_be_written_stops_the_run_in_bounded_time(tmp_path):
    now = [1_000_000.0]
    layout = OutputLayout.of(str(tmp_path / "out"))
    tables_ = delta.open_tables(layout)
    state = RunState(layout, RunRecord(run_id="r", kind="run", run_date=RUN_DATE, model="m", weights="random",
                                       weights_sha256="w", modality="image"), Attempt.new("r"),
                     Host(clock=lambda: now[0]))

    class Unreachable:
        def refresh(self) -> None:
            raise OSError("503 Service Unavailable")

    assert state.beat(tables_.predictions)
    now[0] += HEARTBEAT_GIVE_UP_S - 1
    assert state.beat(Unreachable()), "failures within the bound are logged and retried"
    state.check()
    now[0] += 2
    assert not state.beat(Unreachable())
    with pytest.raises(RunFailed, match="heartbeat could not be written"):
        state.check()


def test_concurrent_creators_of_one_output_end_with_one_table(tmp_path):
    for trial in range(6):
        layout = OutputLayout.of(str(tmp_path / f"out-{trial}"))
        barrier = threading.Barrier(6)

        def create(layout: OutputLayout = layout, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            delta.open_tables(layout)

        threads = [threading.Thread(target=create) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for name in ("predictions", "channel_stats"):
            log = Path(layout.table(name)) / "_delta_log"
            ids = {json.loads(line)["metaData"]["id"] for f in log.glob("*.json") for line in f.read_text().splitlines()
                   if "metaData" in line}
            assert len(ids) == 1 and len(list(log.glob("*.json"))) == 1, (trial, name, ids)


def test_settling_never_deletes_a_committed_file_even_after_compaction(tmp_path):
    root = tmp_path / "out"
    layout = OutputLayout.of(str(root))
    spec = WriterSpec("w", "reprocess", "ghostnet_050", 0, 6, run_id="kept")
    attempt_of(root, spec)
    before = data_files(root / "predictions")
    DeltaTable(str(root / "predictions")).optimize.compact()
    record = records.load_final(layout.runs, "kept")
    for attempt in {s.attempt for s in record.shards}:
        recovery.settle_attempt(layout, delta.open_tables(layout), Attempt("kept", attempt), RUN_DATE)
    assert before <= data_files(root / "predictions"), "compacted-away files are vacuum's to delete, not ours"


def _stats(identity: RunIdentity, count: int) -> pa.Table:
    from pipeline.schema import CHANNEL_STATS

    [model] = identity.models
    rows = [{"run_id": identity.run_id, "shard": 0, "model": model.model, "weights_sha256": model.weights_sha256,
             "layer": layer, "channel": c, "count": count, "sum": 0.5 * count, "sum_sq": 0.25 * count, "mean": 0.5,
             "std": 0.0, "min": 0.5, "max": 0.5} for layer in specs.LAYERS for c in (0, 1)]
    return pa.Table.from_pylist(rows, schema=CHANNEL_STATS)
