"""Model-only CPU throughput: timm's eager GhostNet vs ours after `for_inference`, same weights, one run.

Configurations are timed interleaved (one iteration of each per round) so that background load
affects all of them alike; the median per-iteration time gives img/s.

    python bench/model_cpu.py [--iters 20] [--warmup 3] [--out bench/results/model_cpu.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch

from ghostnet import checkpoint_filter_fn, create_model, for_inference
from ghostnet.weights import load_state_dict_strict

MODEL = "ghostnet_100"
BATCH = 32
SIZE = 224
THREADS = 2

Step = Callable[[], object]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_steps() -> dict[str, Step]:
    torch.manual_seed(0)
    reference = timm.create_model(MODEL, pretrained=False).eval()
    ours = create_model(MODEL)
    load_state_dict_strict(ours, checkpoint_filter_fn(reference.state_dict()), source="timm")
    for_inference(ours)
    ours_cl = for_inference(create_model(MODEL))
    ours_cl.load_state_dict(ours.state_dict())
    ours_cl.to(memory_format=torch.channels_last)
    reference_cl = timm.create_model(MODEL, pretrained=False).eval()
    reference_cl.load_state_dict(reference.state_dict())
    reference_cl.to(memory_format=torch.channels_last)

    x = torch.randn(BATCH, 3, SIZE, SIZE)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        diff = (ours(x) - reference(x)).abs().max().item()
    if diff > 1e-3:
        raise RuntimeError(f"fused model disagrees with timm: max |diff| {diff}")
    return {
        "timm_eager_nchw": lambda: reference(x),
        "timm_eager_channels_last": lambda: reference_cl(x_cl),
        "ours_fused_nchw": lambda: ours(x),
        "ours_fused_channels_last": lambda: ours_cl(x_cl),
        "ours_fused_nchw_channel_weights": lambda: ours.forward_all(x, embeddings=True),
        "ours_fused_channels_last_channel_weights": lambda: ours_cl.forward_all(x_cl, embeddings=True),
    }


def measure(steps: dict[str, Step], warmup: int, iters: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in steps}
    with torch.inference_mode():
        for _ in range(warmup):
            for step in steps.values():
                step()
        for _ in range(iters):
            for name, step in steps.items():
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    return times


def summarize(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        name: {
            "img_per_s_median": round(BATCH / statistics.median(ts), 1),
            "img_per_s_mean": round(BATCH * len(ts) / sum(ts), 1),
            "ms_per_batch_median": round(1000 * statistics.median(ts), 1),
        }
        for name, ts in times.items()
    }


def ratios(results: dict[str, dict[str, float]]) -> dict[str, float]:
    def speed(name: str) -> float:
        return results[name]["img_per_s_median"]

    timm_best = max(speed("timm_eager_nchw"), speed("timm_eager_channels_last"))
    ours_best = max(speed("ours_fused_nchw"), speed("ours_fused_channels_last"))
    ours_cw_best = max(speed("ours_fused_nchw_channel_weights"), speed("ours_fused_channels_last_channel_weights"))
    return {
        "ours_best_over_timm_nchw": round(ours_best / speed("timm_eager_nchw"), 3),
        "ours_best_over_timm_best": round(ours_best / timm_best, 3),
        "ours_nchw_over_timm_nchw": round(speed("ours_fused_nchw") / speed("timm_eager_nchw"), 3),
        "ours_channels_last_over_timm_channels_last": round(
            speed("ours_fused_channels_last") / speed("timm_eager_channels_last"), 3
        ),
        "ours_channel_weights_best_over_timm_nchw": round(ours_cw_best / speed("timm_eager_nchw"), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "model_cpu.json")
    args = parser.parse_args()

    torch.set_num_threads(THREADS)
    load_at_start = os.getloadavg()[0]
    results = summarize(measure(build_steps(), args.warmup, args.iters))
    report = {
        "benchmark": "model only, CPU, fp32",
        "model": MODEL,
        "batch": BATCH,
        "input": [3, SIZE, SIZE],
        "threads": THREADS,
        "warmup": args.warmup,
        "iters": args.iters,
        "device": {"cpu": cpu_name(), "platform": platform.platform(), "logical_cpus": os.cpu_count()},
        "load_avg_1min": {"start": load_at_start, "end": os.getloadavg()[0]},
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "results": results,
        "ratios": ratios(results),
    }
    for name, result in results.items():
        print(f"{name:42s} {result['img_per_s_median']:8.1f} img/s  ({result['ms_per_batch_median']} ms/batch)")
    for name, value in report["ratios"].items():
        print(f"{name:42s} {value:8.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
