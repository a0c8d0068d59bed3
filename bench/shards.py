"""Committing shard by shard costs the pipeline nothing: throughput with many shards vs one shard for
the whole run, side by side in one Ray session (goal: ratio >= 0.95).

The same N JPEGs (500x375 / 375x500, cut from real photos) are labeled with ``--reprocess`` into
fresh outputs, alternating ``--shard-size N`` (one shard) and ``--shard-size N / shards``, after
an uncounted warm-up run; the rate of each is the median over ``repeats``. Each shard is a Delta
transaction on local disk and a set of its own files, so this is the default's cost taken many
times over: the default (500,000 items) commits every few minutes of a GPU.

    python bench/shards.py [--n 400] [--shards 8] [--repeats 2] [--model ghostnet_050]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gpu import make_jpegs
from pipeline import cluster
from pipeline.config import RunConfig
from pipeline.run import run

TARGET = 0.95


def one_run(images: Path, output: Path, model: str, shard_size: int) -> dict:
    config = RunConfig(inputs=(str(images),), output=str(output), model=model, weights="random",
                       reprocess=True, shard_size=shard_size, torch_threads=1)
    started = time.perf_counter()
    record = run(config)
    seconds = time.perf_counter() - started
    shutil.rmtree(output, ignore_errors=True)
    return {"shard_size": shard_size, "shards": record.shards_committed, "items": record.items,
            "seconds": round(seconds, 3), "items_per_s": round(record.items / seconds, 3),
            "commit_s": round(sum(s.commit_s for s in record.shards), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default="ghostnet_050")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "shards.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-shards-"))
    try:
        images = work / "images"
        make_jpegs(images, args.n)
        many = -(-args.n // args.shards)
        runs: dict[str, list[dict]] = {"one": [], "many": []}
        load = []
        with cluster.connect(None):
            one_run(images, work / "warm", args.model, args.n)
            for i in range(args.repeats):
                for kind, size in (("one", args.n), ("many", many)):
                    runs[kind].append(one_run(images, work / f"{kind}-{i}", args.model, size))
                    load.append(os.getloadavg()[0])
        rate = {k: statistics.median(r["items_per_s"] for r in v) for k, v in runs.items()}
        result = {
            "what": "pipeline items/s with many shards vs one shard, one Ray session, alternating",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, no GPU",
            "model": args.model, "items": args.n, "shards": args.shards, "runs": runs,
            "load_average_1m": load, "items_per_s": rate,
            "ratio_many_to_one": round(rate["many"] / rate["one"], 3), "target": TARGET,
        }
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: result[k] for k in ("items_per_s", "ratio_many_to_one", "load_average_1m")}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
