"""Planning in flat driver memory: ``run --dry-run`` over S3-Inventory-style manifests (uri, etag,
size_bytes) of growing size, each in a fresh process whose peak RSS is read from the kernel.

For each size N the manifest is written once (Parquet), then ``ghostnet-pipeline run --dry-run``
lists it, spills it to hash partitions on local disk, diffs it against an empty output and cuts
shards. The goal: the peak at the largest N under 2 GiB and at most 1.5x the peak at 1M.

    python bench/discovery.py [--sizes 1000000 20000000]
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
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 1_000_000


def write_manifest(path: Path, n: int) -> None:
    """An inventory of ``n`` objects spread over dated prefixes, written a million rows at a time."""
    with pq.ParquetWriter(path, pa.schema([("uri", pa.string()), ("etag", pa.string()),
                                           ("size_bytes", pa.int64())])) as writer:
        for start in range(0, n, CHUNK):
            ids = np.arange(start, min(n, start + CHUNK))
            uris = [f"s3://photos/2026/{i % 12 + 1:02d}/{i % 28 + 1:02d}/IMG_{i:09d}.jpg" for i in ids]
            writer.write_table(pa.table({"uri": uris, "etag": [f"{i:032x}" for i in ids],
                                         "size_bytes": (ids % 900_000 + 50_000).astype(np.int64)}))


def dry_run(manifest: Path, output: Path) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "run", "--input", str(manifest), "--output", str(output),
         "--model", "ghostnet_100", "--weights", "random", "--dry-run", "--format", "json"],
        cwd=ROOT, capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak_kib <= before:
        raise RuntimeError("a child with a higher peak ran before; run each size in a fresh bench process")
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(peak_kib / 1024, 1), "plan": json.loads(done.stdout)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 20_000_000])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "plan_memory.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-plan-"))
    results = []
    try:
        for n in sorted(args.sizes):
            manifest = work / f"inventory-{n}.parquet"
            write_manifest(manifest, n)
            # ru_maxrss of children is a maximum over all of them: measure each size in its own process.
            measured = subprocess.run(
                [sys.executable, __file__, "--one", str(manifest), str(work / f"out-{n}")],
                capture_output=True, text=True, check=True)
            results.append({"entries": n, **json.loads(measured.stdout)})
            manifest.unlink()
            print(json.dumps({k: v for k, v in results[-1].items() if k != "plan"}), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    smallest, largest = results[0], results[-1]
    summary = {
        "what": "run --dry-run over an inventory manifest, fresh process per size, peak RSS from the kernel",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "load_average_1m": os.getloadavg()[0],
        "results": results,
        "peak_ratio_largest_to_smallest": round(largest["peak_rss_mib"] / smallest["peak_rss_mib"], 3),
    }
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        print(json.dumps(dry_run(Path(sys.argv[2]), Path(sys.argv[3]))))
    else:
        main()
