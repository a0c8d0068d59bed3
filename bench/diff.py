"""The nightly diff at scale: a listing of N objects against a history of N labeled rows
(0.1% of the objects changed, 0.1% new), with `pipeline.incremental.unlabeled` (an Arrow
anti-join), against the time pyarrow needs just to read the same listing from Parquet.
Each size runs in a fresh process so its peak RSS is its own.

    python bench/diff.py --sizes 1000000 10000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.incremental import unlabeled


def listing(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = pa.array(np.arange(n)).cast(pa.string())
    uris = pc.binary_join_element_wise("s3://bucket/photos/2026/", pc.utf8_lpad(ids, 10, "0"), ".jpg", "")
    etags = pc.utf8_lpad(pa.array(rng.integers(0, 2**62, n)).cast(pa.string()), 32, "0")
    sizes = pa.array(rng.integers(10_000, 5_000_000, n))
    return pa.table({"uri": uris, "etag": etags, "size_bytes": sizes, "modality": pa.repeat("image", n)})


def measure(n: int) -> dict:
    history = listing(n, seed=1).select(["uri", "etag", "size_bytes"])
    current = listing(n, seed=1)
    changed = np.arange(0, n, 1000)
    etags = current["etag"].to_numpy(zero_copy_only=False).copy()
    etags[changed] = "changed"
    fresh = listing(n // 1000, seed=2)
    fresh = fresh.set_column(0, "uri", pc.binary_join_element_wise(fresh["uri"], "-new", ""))
    current = pa.concat_tables([current.set_column(1, "etag", pa.array(etags)), fresh])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "listing.parquet"
        pq.write_table(current, path)
        start = time.perf_counter()
        pq.read_table(path)
        read_s = time.perf_counter() - start
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    start = time.perf_counter()
    todo = unlabeled(current, history)
    diff_s = time.perf_counter() - start
    return {
        "listing": current.num_rows,
        "history": history.num_rows,
        "to_label": todo.num_rows,
        "expected_to_label": len(changed) + fresh.num_rows,
        "diff_s": round(diff_s, 2),
        "pyarrow_read_s": round(read_s, 2),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "peak_rss_gib_before_diff": round(rss_before, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=Path("bench/results/diff.json"))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "runs": []}
    for n in args.sizes:
        done = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True)
        report["runs"].append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(report["runs"][-1]), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
