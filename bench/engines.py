"""CPU engines side by side: the fused channels_last model in eager PyTorch, `torch.compile`
(inductor), ONNX Runtime fp32 and ONNX Runtime INT8 (static PTQ, QDQ), at batch 32, with one
thread (what each of the pipeline's CPU actors gets) and with every core.

What each engine computes is the actor's forward (`forward_all`: logits, 1280-d embedding and
channel weights). Inputs are real decodes (`pipeline.decode.decode_image`, resize 256 / crop 224)
of photo-like JPEGs (bench/peers.py's), normalised. Rounds are interleaved (one batch of every
engine per round) so that the machine's load hits all alike; img/s from the median batch.

Parity against eager fp32 on the same inputs: fp32 engines, max abs logit difference (target
<= 1e-3) and max abs channel-weight difference; INT8, top-1 agreement and top-5 overlap (targets
>= 99% and >= 97%) on the demo images it was calibrated on (held in: `demo.samples` pictures) and
on photo-like images it never saw.

    python bench/engines.py [--model ghostnet_100] [--threads 1 2] [--rounds 15] [--skip compile]
        [--out bench/results/engines.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ghostnet
from bench.model_cpu import cpu_name
from bench.peers import make_photos
from ghostnet import engines
from pipeline import decode

BATCH = 32
CANDIDATES = ("torch", "compile", "onnx", "onnx-int8")


def decoded(paths: list[Path], meta: ghostnet.ModelMeta) -> torch.Tensor:
    pixels = np.stack([decode.decode_image(p.read_bytes(), meta).pixels for p in paths])
    return ghostnet.normalize(pixels, meta, channels_last=True)


def demo_images(folder: Path, count: int) -> list[Path]:
    from demo import samples

    return samples.write_images(folder, count, seed=7)


def compiled_forward(model: ghostnet.GhostNet) -> object:
    import copy

    traced = ghostnet.channel_weights.traceable_forward_all(copy.deepcopy(model), embeddings=True)
    return torch.compile(traced, fullgraph=True, dynamic=False)


def parity(reference: ghostnet.InferenceOutput, other: ghostnet.InferenceOutput) -> dict:
    top5_ref = reference.logits.topk(5, dim=1).indices
    top5 = other.logits.topk(5, dim=1).indices
    overlap = [len(set(a.tolist()) & set(b.tolist())) / 5 for a, b in zip(top5_ref, top5, strict=True)]
    return {
        "max_abs_logit_diff": float((reference.logits - other.logits).abs().max()),
        "max_abs_channel_weight_diff": max(float((reference.channel_weights[k] - other.channel_weights[k]).abs().max())
                                           for k in reference.channel_weights),
        "max_abs_embedding_diff": float((reference.embedding - other.embedding).abs().max())
        if reference.embedding is not None and other.embedding is not None else None,
        "top1_agreement": float((top5_ref[:, 0] == top5[:, 0]).float().mean()),
        "top5_overlap": float(np.mean(overlap)),
        "items": len(top5_ref),
    }


def quantize_int8(graph: bytes, calibration: Iterable[np.ndarray]) -> bytes:
    """`graph` with int8 weights (per channel) and uint8 activations (QDQ), the activation ranges
    taken from running `calibration` batches (NCHW float32) through it."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = iter(list(calibration))

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(batches, None)
            return None if batch is None else {"input": batch}

    with tempfile.TemporaryDirectory(prefix="ghostnet-int8-") as folder:
        fp32, prepared, int8 = (os.path.join(folder, f) for f in ("fp32.onnx", "prep.onnx", "int8.onnx"))
        with open(fp32, "wb") as f:
            f.write(graph)
        quant_pre_process(fp32, prepared, skip_symbolic_shape=True)
        quantize_static(prepared, int8, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        with open(int8, "rb") as f:
            return f.read()


def build(name: str, model: ghostnet.GhostNet, example: torch.Tensor, demo: torch.Tensor) -> object:
    """The forward of candidate ``name``, built (and for compile, compiled) on ``example``."""
    if name == "torch":
        return lambda x: model.forward_all(x, embeddings=True)
    if name == "compile":
        compiled = compiled_forward(model)
        with torch.inference_mode():
            compiled(example)  # compiles for this batch shape
        return compiled
    graph = engines.export_onnx(model, example)
    if name == "onnx-int8":
        graph = quantize_int8(graph, [demo[i:i + BATCH].float().contiguous().numpy()
                                      for i in range(0, len(demo), BATCH)])
    return engines.OnnxEngine(graph, threads=1, embeddings=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ghostnet_100")
    parser.add_argument("--weights", default=None, help="a weights file (default: random, seed 0)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calibration", type=int, default=64, help="demo images to calibrate INT8 on")
    parser.add_argument("--held-out", type=int, default=128, help="photo-like images for INT8 parity")
    parser.add_argument("--skip", nargs="*", default=[], choices=CANDIDATES)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "engines.json")
    args = parser.parse_args()
    loadavg_start = Path("/proc/loadavg").read_text().strip()
    work = Path(tempfile.mkdtemp(prefix="gnengines-", dir="/tmp"))
    random.seed(0)

    model = ghostnet.create_model(args.model, weights=args.weights) if args.weights else ghostnet.create_model(
        args.model)
    if not args.weights:
        ghostnet.init_random(model, 0)
    meta = model.meta
    model = ghostnet.for_inference(model).to(memory_format=torch.channels_last)
    photos = sorted(make_photos(work / "photos", BATCH + args.held_out).glob("*.jpg"))
    x = decoded(photos[:BATCH], meta)
    held_out = decoded(photos[BATCH:], meta)
    demo = decoded(demo_images(work / "demo", args.calibration), meta)

    forwards: dict[str, object] = {}
    build_s: dict[str, float] = {}
    for name in CANDIDATES:
        if name in args.skip:
            continue
        started = time.perf_counter()
        forwards[name] = build(name, model, x, demo)
        build_s[name] = round(time.perf_counter() - started, 2)
        print(f"built {name} in {build_s[name]} s", flush=True)

    with torch.inference_mode():
        reference = {"batch": model.forward_all(x, embeddings=True),
                     "demo_held_in": model.forward_all(demo, embeddings=True),
                     "photos_held_out": model.forward_all(held_out, embeddings=True)}
        agreement = {name: {which: parity(ref, f(inputs))  # type: ignore[operator]
                            for which, (ref, inputs) in {"batch": (reference["batch"], x),
                                                         "demo_held_in": (reference["demo_held_in"], demo),
                                                         "photos_held_out": (reference["photos_held_out"],
                                                                             held_out)}.items()}
                     for name, f in forwards.items() if name != "compile"}
        if "compile" in forwards:
            agreement["compile"] = {"batch": parity(reference["batch"], forwards["compile"](x))}  # type: ignore[operator]

    speeds: dict[str, dict] = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for f in forwards.values():
            if isinstance(f, engines.OnnxEngine):
                f.set_threads(threads)
        times: dict[str, list[float]] = {name: [] for name in forwards}
        with torch.inference_mode():
            for _ in range(2):
                for f in forwards.values():
                    f(x)  # type: ignore[operator]
            for _ in range(args.rounds):
                for name, f in forwards.items():
                    start = time.perf_counter()
                    f(x)  # type: ignore[operator]
                    times[name].append(time.perf_counter() - start)
        speeds[str(threads)] = {name: {"img_per_s": round(BATCH / statistics.median(ts), 1),
                                       "ms_per_batch_median": round(1000 * statistics.median(ts), 1)}
                                for name, ts in times.items()}
        line = "  ".join(f"{n} {v['img_per_s']}" for n, v in speeds[str(threads)].items())
        print(f"{threads} thread(s): img/s {line}", flush=True)

    ratios = {t: {n: round(v["img_per_s"] / s["torch"]["img_per_s"], 3) for n, v in s.items()}
              for t, s in speeds.items() if "torch" in s}
    report = {
        "benchmark": "CPU engines, model only (forward_all), batch 32",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "onnxruntime": _version("onnxruntime"), "onnx": _version("onnx")},
        "loadavg_start": loadavg_start, "loadavg_end": Path("/proc/loadavg").read_text().strip(),
        "model": args.model, "weights": args.weights or "random (seed 0)", "batch": BATCH, "rounds": args.rounds,
        "inputs": "photo-like JPEGs (80% 800x600, 20% 1920x1080) through pipeline.decode.decode_image",
        "int8_calibration": f"{args.calibration} demo.samples pictures (seed 7) through the same decode",
        "build_s": build_s, "img_per_s": speeds, "ratio_over_torch": ratios, "parity": agreement,
    }
    print(json.dumps({"ratio_over_torch": ratios, "parity": agreement}, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
