"""What the commit protocol of issue #23 (fences, immutable files, pinned reads, pending shards in
the record) costs against the protocol before it (commit b2dde77), measured side by side.

1. Requests per shard. One run labels ``--shards`` shards of 3 items alone, in the schedule
   checker's simulation (no other actor, no fault, no crash), once with this checkout and once with
   the old tree; every storage and table call it makes is counted. Deterministic: no timing.
2. Throughput at the default shard size. The same ``--n`` JPEGs (500x375) are labeled with
   ``--reprocess`` by the CLI of this checkout and of the old tree, alternating, each run a fresh
   process with its private Ray, ``--repeats`` times each; medians. Target: within 2%.

    python bench/protocol_cost.py [--shards 10] [--n 400] [--repeats 3] [--out bench/results/protocol_cost.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gpu import make_jpegs  # noqa: E402
from tests.protocol import legacy  # noqa: E402
from tests.protocol.schedules import Schedule, run_schedule  # noqa: E402
from tests.protocol.specs import WriterSpec  # noqa: E402

TARGET = 0.98


def one_writer(shards: int) -> Schedule:
    writer = WriterSpec("w0", "reprocess", "ghostnet_050", 0, 3 * shards, run_id="cost")
    return Schedule(seed=1, writers=[writer])


def requests_per_shard(shards: int) -> dict:
    schedule = one_writer(shards)
    new = legacy.requests(run_schedule(schedule).trace)
    cases = Path(tempfile.mkdtemp()) / "cases.json"
    cases.write_text(json.dumps([json.loads(schedule.to_json())]))
    done = subprocess.run([sys.executable, "-m", "tests.protocol.legacy", "--replay", str(cases)], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    [verdict] = json.loads(done.stdout)
    old = verdict["requests"]
    return {"shards": shards, "old": old, "new": new, "old_per_shard": round(sum(old.values()) / shards, 2),
            "new_per_shard": round(sum(new.values()) / shards, 2)}


def cli_run(tree: Path, images: Path, output: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "TMPDIR": tempfile.mkdtemp(prefix="pc-", dir="/tmp")}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "jobs.cli", "run", "--input", str(images), "--output", str(output),
                           "--model", "ghostnet_050", "--weights", "random", "--reprocess"],
                          cwd=tree, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    shutil.rmtree(env["TMPDIR"], ignore_errors=True)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    record = next(json.loads(p.read_text()) for p in (output / "_runs").glob("*.json"))
    shutil.rmtree(output, ignore_errors=True)
    inference_s = record["timings"].get("inference_s", seconds)
    return {"seconds": round(seconds, 2), "inference_s": inference_s, "items": record["items"],
            "items_per_s": round(record["items"] / inference_s, 2), "load_1m": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "protocol_cost.json"))
    args = parser.parse_args()
    result = {"what": "the commit protocol of #23 vs the one before it (b2dde77)",
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, no GPU",
              "requests": requests_per_shard(args.shards)}
    print(json.dumps(result["requests"], indent=2), flush=True)
    if not args.repeats:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        return
    work = Path(tempfile.mkdtemp(prefix="protocol-cost-"))
    try:
        make_jpegs(work / "images", args.n)
        with legacy.old_tree(legacy.REF) as front:
            trees = {"new": ROOT, "old": front.resolve().parent / "tree"}
            runs: dict[str, list[dict]] = {"new": [], "old": []}
            for i in range(args.repeats):
                for name, tree in trees.items():
                    runs[name].append(cli_run(tree, work / "images", work / f"out-{name}-{i}"))
                    print(name, runs[name][-1], flush=True)
        rate = {k: statistics.median(r["items_per_s"] for r in v) for k, v in runs.items()}
        result |= {"items": args.n, "shard_size": "default (500,000): one shard", "runs": runs, "items_per_s": rate,
                   "ratio_new_to_old": round(rate["new"] / rate["old"], 3), "target": TARGET}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result.get(k) for k in ("items_per_s", "ratio_new_to_old")}))


if __name__ == "__main__":
    main()
