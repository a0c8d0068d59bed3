"""Ours vs the peers on the same job, side by side: ``ghostnet-pipeline run`` (defaults), Ray Data
as its batch-inference guide teaches and Daft as its docs teach (bench/peer_jobs.py).

The job: photo-like JPEGs (80% 800x600, 20% 1920x1080, cut from real photographs), ghostnet_100
with one weights file for all three (random, seed 0, saved as safetensors), resize 256 / crop
224, top-5, written to Parquet (ours: its Delta table). Every run is a fresh process, round-robin
over the systems within each round (small set, then large set), after one uncounted run of each,
so the machine's load hits all alike; figures are medians over the rounds. Each output is
checked: one row per image, and top-1 agreement with ours on every image (target >= 99%).

From the medians of the small (N1) and large (N2) runs: marginal img/s = (N2 - N1) / (wall2 -
wall1); start-up s = wall1 - N1 / marginal (the fixed cost a run pays before its first image);
wall for N2 as measured. Ratios ours/peer.

    python bench/peers.py [--small 100] [--large 1000] [--rounds 2] [--peers-python /work/peers-venv/bin/python]
        [--systems ours raydata daft] [--out bench/results/peers.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = "ghostnet_100"
SYSTEMS = ("ours", "raydata", "daft")
AGREEMENT = 0.99
TARGETS = {"marginal_over_daft": 2.0, "marginal_over_raydata": 2.5, "startup_over_daft": 1.5,
           "wall_large_over_daft": 0.8}

# The job's images: photo-like JPEGs, 80% 800x600 and 20% 1920x1080, cut from real photographs.
SIZES = ((800, 600), (1920, 1080))
LARGE_SHARE = 0.2


def make_photos(folder: Path, count: int) -> Path:
    """``count`` photo-like JPEGs in ``folder`` (made once; the same seed gives the same files)."""
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.jpg"))) != count:
        with ProcessPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(_one_photo, [(folder, i) for i in range(count)], chunksize=32))
    return folder


def _one_photo(args: tuple[Path, int]) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.corpus import photos

    folder, i = args
    rng = random.Random(i)
    sources = list(photos().values())
    source = sources[i % len(sources)]
    w, h = source.size
    cw, ch = rng.randint(w // 3, w), rng.randint(h // 3, h)
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    size = SIZES[1] if rng.random() < LARGE_SHARE else SIZES[0]
    image = source.crop((left, top, left + cw, top + ch)).resize(size)
    image.save(folder / f"photo-{i:06d}.jpg", quality=rng.randint(85, 95))


def command(system: str, images: Path, output: Path, weights: Path, peers_python: str) -> list[str]:
    if system == "ours":
        return [sys.executable, "-m", "jobs.cli", "run", "--input", str(images), "--output", str(output),
                "--model", MODEL, "--weights", str(weights), "--topk", "5"]
    python = sys.executable if system == "raydata" else peers_python
    return [python, str(ROOT / "bench" / "peer_jobs.py"), system, "--input", str(images), "--output", str(output),
            "--weights", str(weights)]


def top1_by_file(system: str, output: Path) -> dict[str, int]:
    """Each image's top-1 class id, by file name, from ``system``'s output."""
    import pyarrow.parquet as pq

    if system == "ours":
        from deltalake import DeltaTable

        table = DeltaTable(str(output / "predictions")).to_pyarrow_table(columns=["uri", "topk_ids"])
        paths, top5 = table["uri"].to_pylist(), table["topk_ids"].to_pylist()
    else:
        table = pq.read_table(output)
        paths, top5 = table["path"].to_pylist(), table["top5"].to_pylist()
    found = {os.path.basename(p): int(t[0]) for p, t in zip(paths, top5, strict=True)}
    if len(found) != len(paths):
        raise RuntimeError(f"{system}: {len(paths)} rows for {len(found)} distinct files")
    return found


def one_run(system: str, images: Path, count: int, weights: Path, work: Path, env: dict, peers_python: str) -> dict:
    output = work / f"out-{system}-{count}-{time.monotonic_ns()}"
    load = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(command(system, images, output, weights, peers_python), cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{system} on {count} images failed ({done.returncode}):\n{done.stdout[-2000:]}\n"
                           f"{done.stderr[-4000:]}")
    top1 = top1_by_file(system, output)
    shutil.rmtree(output, ignore_errors=True)
    if len(top1) != count:
        raise RuntimeError(f"{system} wrote {len(top1)} rows for {count} images")
    return {"system": system, "images": count, "wall_s": round(wall, 3), "load_avg_1min_before": load,
            "rows": len(top1), "top1": top1}


def agreement(runs: list[dict]) -> dict[str, float]:
    """Top-1 agreement of each peer with ours, over every image of every run of the same set."""
    result = {}
    for system in {r["system"] for r in runs} - {"ours"}:
        same = total = 0
        for ours in (r for r in runs if r["system"] == "ours"):
            for peer in (r for r in runs if r["system"] == system and r["images"] == ours["images"]):
                same += sum(peer["top1"][name] == top for name, top in ours["top1"].items())
                total += len(ours["top1"])
        result[system] = round(same / total, 4) if total else None
    return result


def summarise(runs: list[dict], small: int, large: int) -> dict:
    out: dict = {}
    for system in sorted({r["system"] for r in runs}):
        walls = {n: [r["wall_s"] for r in runs if r["system"] == system and r["images"] == n] for n in (small, large)}
        median = {n: statistics.median(w) for n, w in walls.items() if w}
        if len(median) < 2:
            continue
        marginal = (large - small) / (median[large] - median[small])
        out[system] = {"wall_s": walls, "wall_s_median": {str(n): round(m, 2) for n, m in median.items()},
                       "marginal_img_per_s": round(marginal, 2),
                       "startup_s": round(median[small] - small / marginal, 2)}
    if "ours" in out:
        ours = out["ours"]
        for peer in set(out) - {"ours"}:
            theirs = out[peer]
            ours[f"over_{peer}"] = {
                "marginal": round(ours["marginal_img_per_s"] / theirs["marginal_img_per_s"], 3),
                "startup": round(ours["startup_s"] / theirs["startup_s"], 3),
                f"wall_{large}": round(ours["wall_s_median"][str(large)] / theirs["wall_s_median"][str(large)], 3),
            }
    return out


def targets(summary: dict, large: int) -> dict:
    ours = summary.get("ours", {})
    daft, raydata = ours.get("over_daft"), ours.get("over_raydata")
    found = {}
    if daft:
        found["marginal_over_daft"] = {"value": daft["marginal"], "target": ">= 2.0", "met": daft["marginal"] >= 2.0}
        found["startup_over_daft"] = {"value": daft["startup"], "target": "<= 1.5", "met": daft["startup"] <= 1.5}
        found[f"wall_{large}_over_daft"] = {"value": daft[f"wall_{large}"], "target": "<= 0.8",
                                            "met": daft[f"wall_{large}"] <= 0.8}
    if raydata:
        found["marginal_over_raydata"] = {"value": raydata["marginal"], "target": ">= 2.5",
                                          "met": raydata["marginal"] >= 2.5}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--peers-python", default="/work/peers-venv/bin/python",
                        help="the Python of the venv that holds Daft (never the project's)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "peers.json")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    import ghostnet

    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    work = Path(tempfile.mkdtemp(prefix="gnpeers-", dir="/tmp"))
    loadavg_start = Path("/proc/loadavg").read_text().strip()
    runs: list[dict] = []
    try:
        large = make_photos(work / f"in-{args.large}", args.large)
        small = work / f"in-{args.small}"
        small.mkdir()
        for path in sorted(large.glob("*.jpg"))[: args.small]:
            shutil.copy(path, small / path.name)
        weights = work / f"{MODEL}.safetensors"
        model = ghostnet.create_model(MODEL)
        ghostnet.init_random(model, 0)
        ghostnet.save_weights(model, weights)
        # One uncounted run of each first: page cache, the ONNX export cache, torch's kernels; the
        # same for all.
        for system in args.systems:
            one_run(system, small, args.small, weights, work, env, args.peers_python)
        for round_ in range(args.rounds):
            for images, count in ((small, args.small), (large, args.large)):
                for system in args.systems:
                    row = one_run(system, images, count, weights, work, env, args.peers_python)
                    runs.append(row)
                    print(f"round {round_}: {system:8s} {count:5d} images {row['wall_s']:7.2f} s "
                          f"(load {row['load_avg_1min_before']:.1f})", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = summarise(runs, args.small, args.large)
    agree = agreement(runs)
    report = {
        "benchmark": "ours vs Ray Data (its guide) vs Daft (its docs), fresh process per run, round-robin",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": {"cpu": _cpu_name(), "logical_cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": _versions(args.peers_python),
        "loadavg_start": loadavg_start, "loadavg_end": Path("/proc/loadavg").read_text().strip(),
        "job": {"model": MODEL, "weights": "random (seed 0), one safetensors file for all", "batch_size": 32,
                "images": "80% 800x600, 20% 1920x1080 JPEG, quality 85-95, cut from real photos",
                "preprocessing": "bicubic resize of the shorter side to 256, centre crop 224, ImageNet mean/std",
                "small": args.small, "large": args.large, "rounds": args.rounds},
        "summary": summary,
        "top1_agreement_with_ours": agree,
        "agreement_target": AGREEMENT,
        "targets": targets(summary, args.large),
        "runs": [{k: v for k, v in r.items() if k != "top1"} for r in runs],
    }
    print(json.dumps({k: report[k] for k in ("summary", "top1_agreement_with_ours", "targets")}, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


def _cpu_name() -> str:
    from bench.model_cpu import cpu_name

    return cpu_name()


def _versions(peers_python: str) -> dict:
    from importlib import metadata

    ours = {name: metadata.version(name) for name in ("torch", "ray", "onnxruntime", "timm")}
    peer = subprocess.run([peers_python, "-c", "import daft, torch, timm; print(daft.__version__, torch.__version__, "
                                               "timm.__version__)"], capture_output=True, text=True, check=False)
    daft, torch, timm = (peer.stdout.split() + [None] * 3)[:3]
    return {"python": platform.python_version(), "project_venv": ours,
            "peers_venv": {"daft": daft, "torch": torch, "timm": timm}}


if __name__ == "__main__":
    main()
