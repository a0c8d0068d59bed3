"""Memory for N and k*N inputs, side by side in one Ray session: object store in use (sampled) and
peak RSS of the whole Ray process tree, for the real pipeline on generated images.

    python bench/memory.py --n 40 --factors 1 4 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil
import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import RunConfig
from pipeline.run import run
from tests.corpus import gradient

OBJECT_STORE = 400 * 2**20


class Sampler:
    """Samples object-store bytes in use and the RSS of this process and all its descendants."""

    def __init__(self, every_s: float = 0.1) -> None:
        self.every_s = every_s
        self.peak_store = 0.0
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(self.every_s):
            total = ray.cluster_resources().get("object_store_memory", 0.0)
            free = ray.available_resources().get("object_store_memory", total)
            self.peak_store = max(self.peak_store, total - free)
            rss = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    rss += p.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
            self.peak_rss = max(self.peak_rss, rss)


def make_images(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        gradient(320, 240, seed=i).save(folder / f"img-{i:05d}.jpg", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 4, 10])
    parser.add_argument("--json", type=Path, default=Path("bench/results/memory_cpu.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gnmem-", dir="/tmp"))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=os.cpu_count(), object_store_memory=OBJECT_STORE, include_dashboard=False,
             _temp_dir=str(work / "ray"), _node_ip_address="127.0.0.2", logging_level="ERROR")
    report: dict = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "object_store_bytes": OBJECT_STORE,
        "runs": [],
    }
    try:
        for factor in args.factors:
            count = args.n * factor
            make_images(work / f"in-{count}", count)
            config = RunConfig(inputs=(str(work / f"in-{count}"),), output=str(work / f"out-{count}"),
                               model="ghostnet_050", weights="random", num_classes=10)
            start = time.perf_counter()
            with Sampler() as sampler:
                result = run(config)
            row = {"items": count, "elapsed_s": round(time.perf_counter() - start, 1),
                   "peak_object_store_mib": round(sampler.peak_store / 2**20, 1),
                   "peak_rss_tree_mib": round(sampler.peak_rss / 2**20, 1), "committed": result.committed}
            report["runs"].append(row)
            print(json.dumps(row), flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    base = report["runs"][0]
    for row in report["runs"][1:]:
        row["rss_vs_n"] = round(row["peak_rss_tree_mib"] / base["peak_rss_tree_mib"], 2)
        row["object_store_vs_budget"] = round(row["peak_object_store_mib"] * 2**20 / OBJECT_STORE, 2)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
