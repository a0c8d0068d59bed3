"""Where a submitted run's tasks ran on a three-node cluster on loopback.

Starts a head (127.0.0.3) and two workers (.4, .5) with ``infra/local/start-cluster.sh`` (through
``tests/jobs/cluster.py``, as ``tests/jobs/test_submit.py`` does: 2 CPUs and a 256 MiB object store
each, the custom resource ``model_node`` on .4 only), submits a run of N small PNGs through the
Jobs API with ``--actor-resources '{"model_node": 1}'``, and records the run record's
``tasks_per_node`` (Ray Data's task counts per operator, by node). Stops the cluster by PID.

    python bench/placement.py [--images 96] [--decode-batch-size 8] [--out bench/results/placement.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from tests.jobs import cluster as local_cluster  # noqa: E402

MODEL_NODE = "model_node"
MODEL_ARGS = ["--model", "ghostnet_050", "--weights", "random", "--num-classes", "4"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--decode-batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "placement.json")
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="placement-") as scratch:
        work = Path(scratch)
        images = work / "images"
        images.mkdir()
        for i in range(args.images):
            Image.new("RGB", (40 + i, 36), color=(2 * i % 256, (200 - 2 * i) % 256, 90)).save(
                images / f"img_{i:03d}.png")
        output = work / "out"
        with local_cluster.running(work / "cluster", workers=2, num_cpus=2, object_store_mb=256,
                                   worker_resources=json.dumps({MODEL_NODE: 1})) as cluster:
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "jobs.cli", "submit", "--address", cluster.dashboard_url, "--",
                 "run", "--input", str(images), "--output", str(output), *MODEL_ARGS,
                 "--actor-resources", json.dumps({MODEL_NODE: 1}),
                 "--decode-batch-size", str(args.decode_batch_size)],
                cwd=ROOT, capture_output=True, text=True, timeout=600)
            elapsed = time.perf_counter() - started
            node_ips = list(cluster.node_ips)
        if done.returncode != 0:
            raise SystemExit(f"submit failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        [record_path] = (output / "_runs").glob("*.json")
        record = json.loads(record_path.read_text())
    report = {
        "benchmark": "placement of a submitted run's tasks on a three-node loopback cluster",
        "script": "bench/placement.py",
        "argv": sys.argv[1:],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": {"logical_cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": {"python": platform.python_version()},
        "load_avg_1min": {"start": load_at_start, "end": os.getloadavg()[0]},
        "cluster": {"node_ips": node_ips, "head": node_ips[0], "cpus_per_node": 2, "object_store_mb": 256,
                    "custom_resource": {MODEL_NODE: {"node": node_ips[1], "amount": 1}}},
        "run": {"images": args.images, "decode_batch_size": args.decode_batch_size,
                "actor_resources": {MODEL_NODE: 1}, "model": "ghostnet_050 random, 4 classes",
                "run_id": record["run_id"], "rows_per_status": record["rows_per_status"],
                "submit_wall_s": round(elapsed, 1)},
        "tasks_per_node": record["tasks_per_node"],
    }
    print(json.dumps(report["tasks_per_node"], indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
