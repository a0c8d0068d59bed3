"""The diff against a long history: ``--dry-run`` against outputs committed through the pipeline's own
commit path, each dry run in a fresh process whose peak RSS the kernel reports.

1. **20M labeled** (``--labeled``): an inventory manifest of N entries (uri, etag, size_bytes);
   ``run --dry-run`` on it against an empty output, then against an output where all N are
   labeled by the same model and weights, committed shard by shard (500k rows a shard). Target:
   the labeled peak at most 1.5x the empty-output peak.
2. **365 nights** (``--nights``): night k's 100k items sit under their own dated prefix and are
   committed as night k's run (one shard, its channel statistics and its run record beside it).
   The diff measured is ``nightly --dry-run`` for the next night, whose listing holds its own
   100k new items and the previous night's 100k again (objects re-listed late, as a two-day
   inventory window does); it is measured against an output of 1 night and one of all of them,
   alternating, ``--repeats`` times each. Target: time and peak each at most 1.5x.

The prediction rows are made up (random scores, a 1000-class head, seven channel-weight
summaries a row, as ghostnet_050 writes); they are written and committed by
``commit.write_and_commit``, through the same commits a run's driver makes once a shard's rows
are written.

    python bench/history.py [--labeled 20000000] [--nights 365] [--night-items 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.discovery import write_manifest  # noqa: E402
from pipeline import commit  # noqa: E402
from pipeline import record as records  # noqa: E402
from pipeline.commit import RunIdentity  # noqa: E402
from pipeline.config import RunConfig  # noqa: E402
from pipeline.delta import DeltaLog, open_tables  # noqa: E402
from pipeline.fencing import Attempt  # noqa: E402
from pipeline.record import RunRecord, ShardRecord  # noqa: E402
from pipeline.run import model_spec  # noqa: E402
from pipeline.schema import CHANNEL_STATS, CHANNEL_WEIGHT, PREDICTIONS  # noqa: E402
from pipeline.tables import OutputLayout  # noqa: E402

MODEL = "ghostnet_050"
SHARD_ROWS = 500_000
CLASSES, TOPK = 1000, 5
LAYERS = [f"blocks.{i}.0.se" for i in (3, 4, 6, 6, 6, 8, 9)]
FIRST_NIGHT = date(2025, 12, 1)


def identity(run_id: str, run_date: str) -> RunIdentity:
    spec = model_spec(RunConfig(inputs=("unused",), output="unused", model=MODEL, weights="random"))
    return RunIdentity.single(run_id, run_date, spec.name, spec.identity(), reprocess=False)


def _repeat(value: object, n: int, type_: pa.DataType) -> pa.Array:
    return pa.array([value], type_).take(np.zeros(n, dtype=np.int64))


def _lists(values: pa.Array, per_row: int, n: int) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(np.arange(0, n * per_row + 1, per_row, dtype=np.int32)), values)


def prediction_rows(keys: pa.Table, who: RunIdentity, rng: np.random.Generator) -> pa.Table:
    """``ok`` rows for the items ``keys`` (uri, etag, size_bytes), as a model run would write them."""
    n = keys.num_rows
    ids = rng.integers(0, CLASSES, size=(n, TOPK), dtype=np.int32)
    scores = np.sort(rng.random((n, TOPK), dtype=np.float32), axis=1)[:, ::-1].copy()
    names = pa.array([f"class_{i:04d}" for i in range(CLASSES)])
    gates = [pa.array(rng.random(n * len(LAYERS), dtype=np.float32)) for _ in range(5)]
    layer = pa.array(LAYERS * n)
    weights = pa.StructArray.from_arrays([layer, *gates], fields=list(CHANNEL_WEIGHT))
    columns = {
        "uri": keys["uri"], "etag": keys["etag"], "size_bytes": keys["size_bytes"],
        "modality": _repeat("image", n, pa.string()), "segment": pa.array(np.zeros(n, np.int32)),
        "start_s": pa.nulls(n, pa.float32()), "end_s": pa.nulls(n, pa.float32()),
        "status": _repeat("ok", n, pa.string()), "error": pa.nulls(n, pa.string()),
        "label": names.take(pa.array(ids[:, 0])), "score": pa.array(scores[:, 0]),
        "topk_ids": _lists(pa.array(ids.ravel()), TOPK, n),
        "topk_labels": _lists(names.take(pa.array(ids.ravel())), TOPK, n),
        "topk_scores": _lists(pa.array(scores.ravel()), TOPK, n),
        "embedding": pa.nulls(n, pa.list_(pa.float32())),
        "channel_weights": _lists(weights, len(LAYERS), n),
        "model": _repeat(who.models[0].model, n, pa.string()),
        "weights_sha256": _repeat(who.models[0].weights_sha256, n, pa.string()),
        "run_id": _repeat(who.run_id, n, pa.string()),
        "processed_at": _repeat(datetime.now(timezone.utc), n, pa.timestamp("us", tz="UTC")),
    }
    return pa.table(columns).cast(PREDICTIONS)


def stats_rows(who: RunIdentity, shard: int, count: int, rng: np.random.Generator) -> pa.Table:
    [model] = who.models
    rows = [{"run_id": who.run_id, "shard": shard, "model": model.model, "weights_sha256": model.weights_sha256,
             "layer": layer, "channel": c, "count": count, "sum": float(m) * count,
             "sum_sq": float(m) ** 2 * count, "mean": float(m), "std": 0.0, "min": 0.0, "max": 1.0}
            for layer in LAYERS for c, m in enumerate(rng.random(16))]
    return pa.Table.from_pylist(rows, schema=CHANNEL_STATS)


def commit_shard(layout: OutputLayout, who: RunIdentity, shard: int, rows: pa.Table,
                 rng: np.random.Generator) -> ShardRecord:
    """Write one shard's files and commit them, as the run's driver does."""
    started = time.perf_counter()
    tables_ = open_tables(layout)
    written = commit.write_and_commit(layout, tables_, who, Attempt.new(who.run_id), shard=shard,
                                      digest=f"{shard:016x}", rows=rows,
                                      stats=stats_rows(who, shard, rows.num_rows, rng))
    now = datetime.now(timezone.utc).isoformat()
    return ShardRecord(shard=shard, items=rows.num_rows, rows=rows.num_rows, rows_per_status={"ok": rows.num_rows},
                       files=1, bytes=written.size, written_s=0.0, commit_s=round(time.perf_counter() - started, 3),
                       committed_at=now)


def write_record(layout: OutputLayout, who: RunIdentity, kind: str, shards: list[ShardRecord],
                 inputs: list[str]) -> None:
    items = sum(s.items for s in shards)
    now = datetime.now(timezone.utc).isoformat()
    records.write(layout.runs, RunRecord(
        run_id=who.run_id, kind=kind, run_date=who.run_date, status=records.COMMITTED, model=who.models[0].model,
        weights="random", weights_sha256=who.models[0].weights_sha256, modality="image", labels=CLASSES, inputs=inputs,
        items_listed=items, items=items, rows=items, rows_per_status={"ok": items}, top_errors=[],
        timings={}, items_per_s=0.0, shards_total=len(shards), shards_committed=len(shards), config={},
        versions={}, started_at=now, finished_at=now, shards=shards))


# --- 1. a dry run against 20M labeled items ------------------------------------------------------


def labeled_history(manifest: Path, output: Path) -> float:
    """Commit every entry of ``manifest`` as labeled, 500k a shard; return the seconds it took."""
    started = time.perf_counter()
    layout, rng = OutputLayout.of(str(output)), np.random.default_rng(0)
    for name in ("predictions", "channel_stats"):
        DeltaLog.open(layout.table(name), name, create=True)
    who = identity("2026-11-29T020000Z-history", "2026-11-29")
    shards = []
    for shard, keys in enumerate(pq.ParquetFile(manifest).iter_batches(SHARD_ROWS)):
        shards.append(commit_shard(layout, who, shard, prediction_rows(pa.table(keys), who, rng), rng))
        print(f"  history shard {shard}: {keys.num_rows:,} rows", flush=True)
    write_record(layout, who, "run", shards, [str(manifest)])
    return time.perf_counter() - started


# --- 2. a nightly diff after 1 and after 365 nights ----------------------------------------------


def night_keys(night: int, n: int) -> pa.Table:
    day = FIRST_NIGHT + timedelta(days=night)
    ids = np.arange(n)
    return pa.table({
        "uri": [f"s3://photos/{day:%Y/%m/%d}/IMG_{i:06d}.jpg" for i in ids],
        "etag": [f"{night:04d}{i:028x}" for i in ids],
        "size_bytes": (ids % 900_000 + 50_000).astype(np.int64),
    })


def commit_night(layout: OutputLayout, night: int, n: int, rng: np.random.Generator) -> None:
    day = (FIRST_NIGHT + timedelta(days=night)).isoformat()
    who = identity(f"{day}T020000Z-nightly", day)
    shard = commit_shard(layout, who, 0, prediction_rows(night_keys(night, n), who, rng), rng)
    write_record(layout, who, "nightly", [shard], [f"s3://photos/{day.replace('-', '/')}/"])


def next_night_manifest(folder: Path, night: int, n: int) -> Path:
    """Night ``night``'s listing: its own items and the previous night's again."""
    path = folder / f"night-{night}.parquet"
    pq.write_table(pa.concat_tables([night_keys(night - 1, n), night_keys(night, n)]), path)
    return path


# --- measuring ------------------------------------------------------------------------------------


def dry_run(args: list[str]) -> dict:
    """One dry run in a child process; ru_maxrss of children is a maximum over all of them, so the
    caller runs each in its own measuring process (``--one``)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "jobs.cli", *args, "--dry-run", "--format", "json"], cwd=ROOT,
                          capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
                                                                / 1024, 1), "plan": json.loads(done.stdout)}


def measured(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, "--one", *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def run_args(manifest: Path, output: Path) -> list[str]:
    return ["run", "--input", str(manifest), "--output", str(output), "--model", MODEL, "--weights", "random"]


def nightly_args(manifest: Path, output: Path, night: int) -> list[str]:
    day = (FIRST_NIGHT + timedelta(days=night)).isoformat()
    return ["nightly", "--input", str(manifest), "--output", str(output), "--model", MODEL, "--weights", "random",
            "--date", day]


def bench_labeled(work: Path, n: int) -> dict:
    manifest = work / f"inventory-{n}.parquet"
    write_manifest(manifest, n)
    empty = measured(run_args(manifest, work / "empty"))
    print(json.dumps({"empty": {k: v for k, v in empty.items() if k != "plan"}}), flush=True)
    build_s = labeled_history(manifest, work / "labeled")
    labeled = measured(run_args(manifest, work / "labeled"))
    print(json.dumps({"labeled": {k: v for k, v in labeled.items() if k != "plan"}}), flush=True)
    if labeled["plan"]["already_labeled"] != n:
        raise RuntimeError(f"expected all {n} entries labeled: {labeled['plan']}")
    shutil.rmtree(work / "labeled")
    return {"entries": n, "history_build_s": round(build_s, 1), "empty_output": empty, "labeled_output": labeled,
            "peak_ratio": round(labeled["peak_rss_mib"] / empty["peak_rss_mib"], 3)}


def bench_nights(work: Path, nights: int, n: int, repeats: int) -> dict:
    """Two outputs, one night and ``nights`` nights of history; their dry runs alternate, so a
    change in the machine's load falls on both alike."""
    outputs = {"one": work / "one-night", "all": work / "all-nights"}
    rng = np.random.default_rng(1)
    for label, output in outputs.items():
        layout = OutputLayout.of(str(output))
        for name in ("predictions", "channel_stats"):
            DeltaLog.open(layout.table(name), name, create=True)
        started = time.perf_counter()
        for night in range(1 if label == "one" else nights):
            commit_night(layout, night, n, rng)
            if night and night % 25 == 0:
                print(f"  {night + 1} nights committed, {time.perf_counter() - started:.0f} s", flush=True)
    build_s = time.perf_counter() - started
    manifests = {"one": next_night_manifest(work, 1, n), "all": next_night_manifest(work, nights, n)}
    night_of = {"one": 1, "all": nights}
    results: dict[str, list[dict]] = {"one": [], "all": []}
    for _ in range(repeats):
        for label in ("one", "all"):
            results[label].append(measured(nightly_args(manifests[label], outputs[label], night_of[label])))
        print(json.dumps({label: [r["plan"]["diff_s"] for r in rs] for label, rs in results.items()}), flush=True)
    for result in (*results["one"], *results["all"]):
        plan = result["plan"]
        if (plan["already_labeled"], plan["to_label"]) != (n, n):
            raise RuntimeError(f"expected {n} labeled and {n} to label: {plan}")

    def median(label: str, key) -> float:
        return round(float(np.median([key(r) for r in results[label]])), 3)

    diff = {label: median(label, lambda r: r["plan"]["diff_s"]) for label in results}
    whole = {label: median(label, lambda r: r["seconds"]) for label in results}
    peak = {label: max(r["peak_rss_mib"] for r in results[label]) for label in results}
    return {"nights": nights, "items_per_night": n, "history_build_s": round(build_s, 1),
            "after_1_night": results["one"], f"after_{nights}_nights": results["all"],
            "diff_s": diff, "dry_run_s": whole, "peak_rss_mib": peak,
            "diff_time_ratio": round(diff["all"] / diff["one"], 3),
            "dry_run_time_ratio": round(whole["all"] / whole["one"], 3),
            "peak_ratio": round(peak["all"] / peak["one"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labeled", type=int, default=20_000_000, help="entries of the labeled history (0: skip)")
    parser.add_argument("--nights", type=int, default=365, help="nights of history (0: skip)")
    parser.add_argument("--night-items", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7, help="dry runs per nightly measurement (median time)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "history.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-history-"))
    load_at_start = os.getloadavg()[0]
    summary = {"what": "--dry-run diff against histories committed by the real commit path, fresh process each",
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
    try:
        if args.labeled:
            summary["labeled"] = bench_labeled(work, args.labeled)
        if args.nights:
            summary["nightly"] = bench_nights(work, args.nights, args.night_items, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary["load_average_1m_at_start"] = load_at_start
    summary["load_average_1m_at_end"] = os.getloadavg()[0]
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(dry_run(sys.argv[2:])))
    else:
        main()
