"""Discovery and the nightly diff at scale, each measurement in a fresh process (its own peak RSS).

1. Manifest + diff, N = 1M and 10M: an inventory-style Parquet manifest of N + 0.1% new objects
   (0.1% of them changed) goes through `pipeline.discover.discover`, the history of N labeled
   rows through `pipeline.incremental.labeled` (a committed run in a real output layout), and
   the two through `pipeline.incremental.unlabeled`. Against: pyarrow reading the same two files.
2. Listing a folder tree of F files on local disk: `pipeline.discover.discover` against
   fsspec's `find(detail=True)` (what discovery did before: one dict per object).

    python bench/discovery.py --sizes 1000000 10000000 --files 200000
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
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import discover, incremental
from pipeline.commit import Layout

MODEL, WEIGHTS = "ghostnet_100", "sha256-of-the-weights"


def listing(n: int, seed: int, folder: str = "2026") -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = pa.array(np.arange(n)).cast(pa.string())
    uris = pc.binary_join_element_wise(f"s3://bucket/photos/{folder}/", pc.utf8_lpad(ids, 10, "0"), ".jpg", "")
    etags = pc.utf8_lpad(pa.array(rng.integers(0, 2**62, n)).cast(pa.string()), 32, "0")
    sizes = pa.array(rng.integers(10_000, 5_000_000, n))
    return pa.table({"uri": uris, "etag": etags, "size_bytes": sizes})


def prepare(n: int, root: Path) -> dict:
    """The manifest and a one-run output whose predictions hold the history."""
    history = listing(n, seed=1)
    changed = np.arange(0, n, 1000)
    etags = history["etag"].to_numpy(zero_copy_only=False).copy()
    etags[changed] = "changed"
    fresh = listing(n // 1000, seed=2, folder="new")
    current = pa.concat_tables([history.set_column(1, "etag", pa.array(etags)), fresh])
    pq.write_table(current, root / "manifest.parquet")
    layout = Layout(str(root / "out"))
    history_file = f"{layout.predictions('2026-11-27')}/history-0.parquet"
    Path(history_file).parent.mkdir(parents=True)
    pq.write_table(history, history_file)
    Path(layout.runs).mkdir(parents=True)
    record = {"run_id": "history", "committed_at": "2026-11-27T00:00:00+00:00", "model": MODEL,
              "weights_sha256": WEIGHTS, "files": {"predictions": [history_file]}}
    Path(layout.run_record("history")).write_text(json.dumps(record))
    return {"listing": current.num_rows, "history": n, "expected_to_label": len(changed) + fresh.num_rows}


def measure_diff(root: Path) -> dict:
    """Ours first (its peak RSS is the process's until then), then pyarrow reading the same files."""
    start = time.perf_counter()
    items = discover.discover([str(root / "manifest.parquet")])
    discover_s = time.perf_counter() - start
    done = incremental.labeled(Layout(str(root / "out")), model=MODEL, weights_sha256=WEIGHTS)
    history_s = time.perf_counter() - start - discover_s
    todo = incremental.unlabeled(items, done)
    total_s = time.perf_counter() - start
    ours = {"to_label": todo.num_rows, "peak_rss_gib": _peak_rss_gib()}
    del items, done, todo
    start = time.perf_counter()
    pq.read_table(root / "manifest.parquet")
    pq.read_table(next((root / "out" / "predictions").rglob("*.parquet")))
    read_s = time.perf_counter() - start
    return {
        **ours,
        "discover_s": round(discover_s, 2),
        "history_s": round(history_s, 2),
        "diff_s": round(total_s - discover_s - history_s, 2),
        "total_s": round(total_s, 2),
        "pyarrow_read_both_s": round(read_s, 2),
        "ratio_to_pyarrow_read": round(total_s / read_s, 2),
    }


def make_tree(files: int, root: Path) -> None:
    """``files`` small files in 100-file folders, two levels deep (root/a/b/file.jpg)."""
    for i in range(0, files, 100):
        folder = root / f"{i // 10_000:03d}" / f"{i // 100 % 100:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(100):
            (folder / f"{i + j:08d}.jpg").touch()


def measure_listing(root: Path, how: str) -> dict:
    start = time.perf_counter()
    if how == "ours":
        found = discover.discover([str(root)]).num_rows
    else:
        import fsspec

        found = sum(1 for p in fsspec.filesystem("file").find(str(root), detail=True) if p.endswith(".jpg"))
    return {"how": how, "found": found, "seconds": round(time.perf_counter() - start, 2),
            "peak_rss_gib": _peak_rss_gib()}


def _peak_rss_gib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def _in_fresh_process(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 10_000_000])
    parser.add_argument("--files", type=int, default=200_000, help="files in the local folder tree")
    parser.add_argument("--step", nargs=3, metavar=("STEP", "ROOT", "ARG"), help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=Path("bench/results/discovery.json"))
    args = parser.parse_args()
    if args.step:
        step, root, arg = args.step
        steps = {
            "prepare": lambda: prepare(int(arg), Path(root)),
            "diff": lambda: measure_diff(Path(root)),
            "tree": lambda: make_tree(int(arg), Path(root)) or {},
            "list": lambda: measure_listing(Path(root), arg),
        }
        print(json.dumps(steps[step]()))
        return
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "manifest_and_diff": [], "listing": []}
    for n in args.sizes:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
            run = _in_fresh_process("--step", "prepare", tmp, str(n))
            run |= _in_fresh_process("--step", "diff", tmp, "-")
        report["manifest_and_diff"].append(run)
        print(json.dumps(run), flush=True)
    if args.files:
        tmp = tempfile.mkdtemp(dir=os.environ.get("BENCH_TMP"))
        try:
            _in_fresh_process("--step", "tree", tmp, str(args.files))
            for how in ("fsspec-find", "ours", "fsspec-find", "ours"):
                report["listing"].append(_in_fresh_process("--step", "list", tmp, how))
                print(json.dumps(report["listing"][-1]), flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
