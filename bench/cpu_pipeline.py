"""The CPU target, side by side in one run: marginal end-to-end throughput of the real pipeline vs
model-only throughput of the same model on the same machine (goal, DESIGN.md: the pipeline delivers
>= 0.7x of what the whole machine does with the model alone).

Model only: ``for_inference`` model, ``forward_all`` (what the actor runs: logits + channel weights),
fp32, on pre-decoded normalised tensors, at the batch size (32), in every CPU engine (eager torch
channels_last, ONNX Runtime), the fastest engine's rate being the denominator; twice: with every
core (torch threads = logical CPUs: "the whole machine", the target's denominator) and with the
torch thread count the pipeline's CPU actor gets (read from a Ray actor with the actor's CPU
request; the denominator of ``ratio_marginal_over_model_only`` in every results file of this
script). Each measured before and after the pipeline runs; a ratio uses the mean of the two.

End to end: ``pipeline.run.run`` on a private local Ray with every core, JPEGs of 500x375 / 375x500
cut from real photos on local disk, N and k*N items (after an uncounted warm-up run), ``repeats``
times each. Marginal rate = (k*N - N) / (median seconds at k*N - median seconds at N): Ray start-up,
actor start and model load cancel out.

    python bench/cpu_pipeline.py [--model ghostnet_100] [--n 160] [--factor 3] [--repeats 2]
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

import numpy as np
import ray
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ghostnet
import pipeline.run as pipeline_run
from bench.gpu import make_jpegs
from bench.model_cpu import cpu_name
from ghostnet.engines import OnnxEngine, export_onnx
from pipeline import decode, stages
from pipeline.config import RunConfig
from pipeline.model import ModelSpec
from pipeline.record import RunRecord

OBJECT_STORE = 400 * 2**20
BATCH = 32  # pipeline.run._plan: 32 rows per batch on a CPU actor
TARGET = 0.7


@ray.remote
def _actor_threads() -> int:
    return torch.get_num_threads()


def actor_threads(cpus_per_actor: float) -> int:
    """torch's thread count in a Ray worker that asks for the model actor's CPUs (Ray sets OMP_NUM_THREADS)."""
    return ray.get(_actor_threads.options(num_cpus=cpus_per_actor).remote())


def model_only(model_name: str, images: list[Path], threads: int, rounds: int) -> dict:
    """img/s of the actor's forward (``forward_all``: logits + channel weights) on batches of already
    decoded and normalised images (median batch), for each CPU engine; ``img_per_s`` is the fastest
    engine's, the honest denominator whichever engine the pipeline runs."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = ModelSpec(model_name, "random").load()
        meta = model.meta
        model = ghostnet.for_inference(model).to(memory_format=torch.channels_last)
        pixels = np.stack([decode.decode_image(p.read_bytes(), meta).pixels for p in images[:BATCH]])
        x = ghostnet.normalize(pixels, meta, channels_last=True)
        forwards = {"torch": lambda batch: model.forward_all(batch, embeddings=False),
                    "onnx": OnnxEngine(export_onnx(model, x), threads=threads, embeddings=False)}
        times: dict[str, list[float]] = {name: [] for name in forwards}
        with torch.inference_mode():
            for _ in range(2):
                for forward in forwards.values():
                    forward(x)
            for _ in range(rounds):  # interleaved, so that load hits both alike
                for name, forward in forwards.items():
                    start = time.perf_counter()
                    forward(x)
                    times[name].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(saved)
    engines = {name: round(BATCH / statistics.median(ts), 2) for name, ts in times.items()}
    fastest = max(engines, key=engines.__getitem__)
    return {"img_per_s": engines[fastest], "fastest_engine": fastest, "img_per_s_by_engine": engines,
            "ms_per_batch_median": round(1000 * statistics.median(times[fastest]), 1), "rounds": rounds}


class StageStats:
    """Keeps the Ray Data plan of each run (``pipeline.stages.build``) to read its per-stage statistics."""

    def __init__(self) -> None:
        self.dataset = None
        self._build = stages.build

    @property
    def last(self) -> str:
        return self.dataset.stats() if self.dataset is not None else ""

    def __enter__(self) -> StageStats:
        def build(*args, **kwargs):
            self.dataset = self._build(*args, **kwargs)
            return self.dataset

        stages.build = build
        return self

    def __exit__(self, *exc) -> None:
        stages.build = self._build


def end_to_end(folder: Path, out: Path, model_name: str, stats: StageStats, **config) -> dict:
    run_config = RunConfig(inputs=(str(folder),), output=str(out), model=model_name, weights="random", **config)
    start = time.perf_counter()
    result = pipeline_run.run(run_config)
    elapsed = time.perf_counter() - start
    if not result.committed or result.rows_per_status != {"ok": result.items}:
        raise RuntimeError(f"run did not label every item: {result}")
    return {"items": result.items, "elapsed_s": round(elapsed, 2), "timings": result.timings,
            "stage_breakdown": stage_breakdown(result), "ray_data_stats": stats.last}


def stage_breakdown(record: RunRecord) -> dict:
    """Where the run record says the time went (docs/operations.md, "Where the time goes")."""
    return {"stage_seconds": record.stage_seconds, "model_actors": record.model_actors,
            "model_busy": record.model_busy, "bound": record.bound}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ghostnet_100")
    parser.add_argument("--n", type=int, default=160)
    parser.add_argument("--factor", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15, help="timed batches per model-only measurement")
    parser.add_argument("--decode-batch-size", type=int, default=None, help="RunConfig.decode_batch_size")
    parser.add_argument("--torch-threads", type=int, default=None, help="RunConfig.torch_threads")
    parser.add_argument("--actors", type=int, default=None, help="RunConfig.actors")
    parser.add_argument("--cpus-per-actor", type=float, default=None, help="RunConfig.cpus_per_actor")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    config = {k: v for k, v in (("decode_batch_size", args.decode_batch_size),
                                ("torch_threads", args.torch_threads), ("actors", args.actors),
                                ("cpus_per_actor", args.cpus_per_actor)) if v is not None}
    date = datetime.now(timezone.utc)
    out = args.out or Path(__file__).parent / "results" / f"cpu_pipeline-{date.date().isoformat()}.json"

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    work = Path(tempfile.mkdtemp(prefix="gncpu-", dir="/tmp"))
    sizes = {"warmup": 32, "n": args.n, "kn": args.n * args.factor}
    load_at_start = os.getloadavg()[0]
    try:
        folders = {name: work / f"in-{count}" for name, count in sizes.items()}
        for name, count in sizes.items():
            make_jpegs(folders[name], count)
        ray.init(address="local", num_cpus=os.cpu_count(), object_store_memory=OBJECT_STORE,
                 include_dashboard=False, _temp_dir=str(work / "ray"), _node_ip_address="127.0.0.2",
                 logging_level="ERROR")
        threads = config.get("torch_threads") or actor_threads(config.get("cpus_per_actor", stages.CPU_ACTOR_CPUS))
        sample = sorted(folders["n"].glob("*.jpg"))
        before = model_only(args.model, sample, threads, args.rounds)
        print(f"model only (before, {threads} threads): {before}", flush=True)
        whole_before = model_only(args.model, sample, os.cpu_count(), args.rounds)
        print(f"model only (before, whole machine, {os.cpu_count()} threads): {whole_before}", flush=True)
        runs = []
        with StageStats() as stats:
            warmup = end_to_end(folders["warmup"], work / "out-warmup", args.model, stats, **config)
            print(f"warm-up run: {warmup['items']} items in {warmup['elapsed_s']} s", flush=True)
            for repeat in range(args.repeats):
                for name in ("n", "kn"):
                    row = end_to_end(folders[name], work / f"out-{name}-{repeat}", args.model, stats, **config)
                    runs.append(row)
                    print(f"run {repeat}: {row['items']} items in {row['elapsed_s']} s "
                          f"(inference {row['timings']['inference_s']:.2f} s, bound by "
                          f"{row['stage_breakdown']['bound']})", flush=True)
        after = model_only(args.model, sample, threads, args.rounds)
        print(f"model only (after, {threads} threads): {after}", flush=True)
        whole_after = model_only(args.model, sample, os.cpu_count(), args.rounds)
        print(f"model only (after, whole machine): {whole_after}", flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)

    def median_s(count: int) -> float:
        return statistics.median(r["elapsed_s"] for r in runs if r["items"] == count)

    extra_items = sizes["kn"] - sizes["n"]
    marginal = extra_items / (median_s(sizes["kn"]) - median_s(sizes["n"]))
    model_rate = (before["img_per_s"] + after["img_per_s"]) / 2
    ratio = marginal / model_rate
    whole_rate = (whole_before["img_per_s"] + whole_after["img_per_s"]) / 2
    whole_ratio = marginal / whole_rate
    report = {
        "benchmark": "CPU: marginal end-to-end vs model-only throughput",
        "date": date.isoformat(timespec="seconds"),
        "device": {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__},
        "load_avg_1min": {"start": load_at_start, "end": os.getloadavg()[0]},
        "model": args.model,
        "weights": "random",
        "images": "500x375 / 375x500 JPEG crops of real photos, quality 85-95, local disk",
        "batch": BATCH,
        "actor_torch_threads": threads,
        "config": config,
        "model_only": {"before": before, "after": after, "img_per_s_mean": round(model_rate, 2),
                       "torch_threads": threads},
        "model_only_whole_machine": {"before": whole_before, "after": whole_after,
                                     "img_per_s_mean": round(whole_rate, 2), "torch_threads": os.cpu_count()},
        "warmup_run": {k: v for k, v in warmup.items() if k != "ray_data_stats"},
        "runs": runs,
        "sizes": sizes,
        "marginal_img_per_s": round(marginal, 2),
        "ratio_marginal_over_model_only": round(ratio, 3),
        "ratio_marginal_over_whole_machine_model_only": round(whole_ratio, 3),
        "target": TARGET,
        "target_ratio": "ratio_marginal_over_whole_machine_model_only",
        "meets_target": whole_ratio >= TARGET,
    }
    print(runs[-1]["ray_data_stats"])
    print(f"stage breakdown of the last run: {json.dumps(runs[-1]['stage_breakdown'])}")
    print(f"model only {model_rate:.1f} img/s ({threads} torch threads, batch {BATCH}), whole machine "
          f"{whole_rate:.1f} img/s ({os.cpu_count()} threads); marginal end to end "
          f"({sizes['n']} -> {sizes['kn']} items) {marginal:.1f} img/s; ratio {ratio:.3f} vs the actor's threads, "
          f"{whole_ratio:.3f} vs the whole machine ({'meets' if whole_ratio >= TARGET else 'below'} the "
          f"{TARGET} target)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
