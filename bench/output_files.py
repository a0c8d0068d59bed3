"""Output file sizes of a large run: N distinct small JPEGs through the real pipeline (private
local Ray, the shipped 48-px demo model so that 2 CPUs get through 100k items in minutes), then
the committed Parquet files counted and sized, and DuckDB reading them back.

For comparison, a smaller run with ``rows_per_file=1`` shows what Ray Data writes when nothing
bundles its blocks: one small file per model batch.

    python bench/output_files.py --items 100000 --unbundled-items 10000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ghostnet.pretrained import PRETRAINED, pretrained_path
from pipeline.config import RunConfig
from pipeline.run import run


def make_inputs(folder: Path, count: int) -> None:
    """``count`` distinct 64-px JPEGs (smooth random colour fields), so rows compress as real ones do."""
    rng = np.random.default_rng(7)
    for i in range(count):
        target = folder / f"{i // 1000:03d}" / f"{i:06d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((64, 64), Image.Resampling.BILINEAR).save(target, quality=90)


def label(folder: Path, output: Path, **settings) -> dict:
    demo = PRETRAINED["demo-image"]
    config = RunConfig(
        inputs=(str(folder),),
        output=str(output),
        model=demo.architecture,
        weights=str(pretrained_path("demo-image")),
        weights_sha256=demo.sha256,
        torch_threads=1,
        **settings,
    )
    start = time.perf_counter()
    result = run(config)
    elapsed = time.perf_counter() - start
    files = sorted((output / "predictions").rglob("*.parquet"))
    sizes = [f.stat().st_size for f in files]
    rows = [pq.ParquetFile(f).metadata.num_rows for f in files]
    groups = [pq.ParquetFile(f).metadata.num_row_groups for f in files]
    counted = duckdb.sql(
        f"SELECT count(*), count(DISTINCT uri) FROM read_parquet('{output}/predictions/**/*.parquet')"
    ).fetchall()[0]
    return {
        "items": result.items,
        "settings": settings,
        "elapsed_s": round(elapsed, 1),
        "items_per_s": round(result.items / elapsed, 1),
        "files": len(files),
        "rows_per_file": rows,
        "row_groups_per_file": groups,
        "mib_per_file": [round(s / 2**20, 2) for s in sizes],
        "smallest_file_mib": round(min(sizes) / 2**20, 3),
        "bytes_per_row": round(sum(sizes) / sum(rows), 1),
        "duckdb_rows_and_distinct_uris": list(counted),
        "channel_stats_files": len(list((output / "channel_stats").rglob("*.parquet"))),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--unbundled-items", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=256, help="model batch (the 48-px model takes big ones)")
    parser.add_argument("--json", type=Path, default=Path("bench/results/output_files.json"))
    args = parser.parse_args()
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "runs": [],
    }
    work = Path(tempfile.mkdtemp(prefix="gp-files-", dir=os.environ.get("BENCH_TMP")))
    try:
        batch = {"batch_size": args.batch_size, "decode_batch_size": args.batch_size // 4}
        for count, settings in ((args.items, batch), (args.unbundled_items, {**batch, "rows_per_file": 1})):
            if not count:
                continue
            folder = work / f"in-{count}"
            make_inputs(folder, count)
            report["runs"].append(label(folder, work / f"out-{count}-{len(report['runs'])}", **settings))
            summary = {k: v for k, v in report["runs"][-1].items() if not isinstance(v, list) or len(v) < 12}
            print(json.dumps(summary), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
