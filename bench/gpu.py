"""GPU benchmarks, side by side in one run, on a machine without Ray (the device machine).

1. model only: timm vs ours (`for_inference`), fp16 channels_last, eager and compiled;
2. decode only: Pillow in N processes vs the device path (nvJPEG + resize on the GPU);
3. end to end, files on local disk -> Parquet, through the real decode stage and the real
   `Predictor` actor class: CPU decode vs device decode, against model-only in the same run;
   then device decode with 1, 2 and 4 actor processes sharing the GPU, eager and compiled;
4. agreement of device decode with the Pillow path (pixels, logits, top-1).

    python bench/gpu.py --images 8192 --json bench/results/gpu.json
    python bench/gpu.py --images 8192 --steps model_only actors --actors 1 4   # what is left to measure
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ghostnet
from pipeline import decode
from pipeline.model import ModelSpec
from pipeline.predict import Predictor
from tests.corpus import photos

MODEL = "ghostnet_100"
STEPS = ("model_only", "decode_only", "end_to_end", "actors", "agreement")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # cpu: a smoke run of the script


@functools.cache
def sources() -> list:
    return list(photos().values())


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def make_jpegs(folder: Path, count: int) -> list[Path]:
    """ImageNet-sized (500x375 / 375x500) JPEGs cut from real photos, quality 85-95."""
    folder.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        return list(pool.map(_one_jpeg, [(folder, i) for i in range(count)], chunksize=64))


def _one_jpeg(args: tuple[Path, int]) -> Path:
    folder, i = args
    rng = random.Random(i)
    source = sources()[i % 3]
    w, h = source.size
    cw, ch = rng.randint(w // 2, w), rng.randint(h // 2, h)
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    size = (500, 375) if rng.random() < 0.7 else (375, 500)
    image = source.crop((left, top, left + cw, top + ch)).resize(size)
    path = folder / f"img-{i:06d}.jpg"
    image.save(path, quality=rng.randint(85, 95))
    return path


def timed(fn, *, warmup: int, iters: int) -> float:
    """Seconds per call, on the GPU clock when there is one."""
    for _ in range(warmup):
        fn()
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync()
    return (time.perf_counter() - start) / iters


def model_only(batch: int, compiled: bool) -> dict:
    import timm

    timm_model = timm.create_model(MODEL, pretrained=False).eval()
    ours = ghostnet.create_model(MODEL)
    ours.load_state_dict(timm_model.state_dict())
    ghostnet.for_inference(ours)
    dtype = torch.float16 if DEVICE.type == "cuda" else torch.float32
    x = torch.randn(batch, 3, 224, 224, device=DEVICE, dtype=dtype).contiguous(memory_format=torch.channels_last)
    models = {
        "timm": timm_model,
        "ours": ours,
    }
    for m in models.values():
        m.to(DEVICE, dtype).to(memory_format=torch.channels_last)
    calls = {
        "timm eager": lambda: models["timm"](x),
        "ours eager": lambda: models["ours"](x),
        "ours eager + channel weights": lambda: models["ours"].forward_all(x, embeddings=False),
    }
    result: dict = {"batch": batch}
    with torch.inference_mode():
        for name, call in calls.items():
            result[name] = batch / timed(call, warmup=5, iters=30)
        if compiled:
            targets = {
                "timm": models["timm"],
                "ours": models["ours"],
                "ours + channel weights": lambda x: models["ours"].forward_all(x, embeddings=False),
            }
            for name, target in targets.items():
                try:
                    start = time.perf_counter()
                    fn = torch.compile(target)
                    fn(x)
                    sync()
                    result[f"{name} compile s"] = time.perf_counter() - start
                    result[f"{name} compiled"] = batch / timed(lambda fn=fn: fn(x), warmup=3, iters=30)
                except Exception as exc:  # noqa: BLE001 - a benchmark reports what failed and goes on
                    result[f"{name} compiled"] = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
    result["ratio eager ours/timm"] = result["ours eager"] / result["timm eager"]
    if compiled:
        result["ratio compiled ours/timm"] = result["ours compiled"] / result["timm compiled"]
    return result


def _cpu_decode(data: bytes) -> bool:
    return decode.decode_image(data, META).pixels is not None


META = ghostnet.create_model(MODEL).meta


def decode_only(datas: list[bytes], workers: int, batch: int) -> dict:
    start = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        ok = sum(pool.map(_cpu_decode, datas, chunksize=32))
    cpu = len(datas) / (time.perf_counter() - start)
    decode.decode_on_device(datas[:batch], ["jpeg"] * len(datas[:batch]), META, DEVICE)
    sync()
    start = time.perf_counter()
    for i in range(0, len(datas), batch):
        chunk = datas[i : i + batch]
        decode.decode_on_device(chunk, ["jpeg"] * len(chunk), META, DEVICE)
    sync()
    gpu = len(datas) / (time.perf_counter() - start)
    return {"cpu processes": workers, "cpu img/s": cpu, "cpu ok": ok, "gpu img/s": gpu, "ratio gpu/cpu": gpu / cpu}


def _decode_chunk(args: tuple[list[str], bool]) -> pa.Table:
    uris, leave = args
    table = pa.table({"uri": uris, "etag": [None] * len(uris), "size_bytes": [None] * len(uris),
                      "modality": ["image"] * len(uris), "_shard": [0] * len(uris)},
                     schema=pa.schema([("uri", pa.string()), ("etag", pa.string()), ("size_bytes", pa.int64()),
                                       ("modality", pa.string()), ("_shard", pa.int32())]))
    return decode.read_and_decode(table, metas=[META], leave_jpegs=leave)


def end_to_end(paths: list[Path], leave_jpegs: bool, workers: int, batch: int, out: Path) -> dict:
    """Files -> decode stage (process pool, like Ray's CPU tasks) -> Predictor -> Parquet."""
    predictor = Predictor(ModelSpec(MODEL, "random"), run_id="bench", decode_on_device=leave_jpegs)
    uris = [str(p) for p in paths]
    chunks = [(uris[i : i + batch], leave_jpegs) for i in range(0, len(uris), batch)]
    writer = None
    rows = 0
    start = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool, ThreadPoolExecutor(1) as write_pool:
        pending = None
        for decoded in pool.map(_decode_chunk, chunks):
            table = predictor(decoded)
            rows += table.num_rows
            if pending:
                pending.result()
            if writer is None:
                writer = pq.ParquetWriter(out / f"e2e-{int(leave_jpegs)}.parquet", table.schema, compression="zstd")
            pending = write_pool.submit(writer.write_table, table)
        pending.result()
    writer.close()
    elapsed = time.perf_counter() - start
    return {"decode": "device" if leave_jpegs else "cpu", "rows": rows, "img/s": rows / elapsed,
            "decode workers": workers, "batch": batch}


def end_to_end_actors(paths: list[Path], actors: int, batch: int, compiled: bool, out: Path) -> dict:
    """Device decode in ``actors`` processes sharing the GPU, as ``--gpus-per-actor 1/actors`` gives.

    Each process is one actor: the real ``Predictor`` (loaded, and compiled when asked, before the
    clock starts), fed by a thread that reads the next files (what Ray's CPU tasks do for device
    decode). All start together at a barrier; throughput is all rows over the slowest actor's time.
    """
    import multiprocessing as mp

    uris = [str(p) for p in paths]
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(actors)
        jobs = [(uris[i::actors], batch, compiled, str(out / f"actor-{i}"), barrier) for i in range(actors)]
        with ProcessPoolExecutor(actors, mp_context=ctx) as pool:
            results = list(pool.map(_actor, jobs))
    start, end = min(r["start"] for r in results), max(r["end"] for r in results)
    rows = sum(r["rows"] for r in results)
    return {"actors": actors, "compiled": compiled, "batch": batch, "rows": rows, "img/s": rows / (end - start),
            "actor start s (load + compile)": max(r["ready_s"] for r in results)}


def _actor(job: tuple) -> dict:
    uris, batch, compiled, _, barrier = job
    started = time.perf_counter()
    predictor = Predictor(ModelSpec(MODEL, "random"), run_id="bench", decode_on_device=True, compile=compiled,
                          batch_size=batch)
    chunks = [(uris[i : i + batch], True) for i in range(0, len(uris), batch)]
    ready_s = time.perf_counter() - started
    barrier.wait()
    start = time.perf_counter()
    rows = 0
    with ThreadPoolExecutor(2) as reader:
        for decoded in reader.map(_decode_chunk, chunks):
            rows += predictor(decoded).num_rows
    sync()
    return {"rows": rows, "start": start, "end": time.perf_counter(), "ready_s": ready_s}


def agreement(paths: list[Path]) -> dict:
    model = ghostnet.create_model(MODEL)
    ghostnet.init_random(model, 0)
    ghostnet.for_inference(model).to(DEVICE).eval()
    datas = [p.read_bytes() for p in paths]
    cpu = torch.stack([torch.from_numpy(decode.decode_image(d, META).pixels) for d in datas]).to(DEVICE)
    dev = torch.stack([d.pixels for d in decode.decode_on_device(datas, ["jpeg"] * len(datas), META, DEVICE)])
    with torch.inference_mode():
        a = model(ghostnet.normalize(cpu, META, DEVICE, torch.float32))
        b = model(ghostnet.normalize(dev, META, DEVICE, torch.float32))
    pixel = (cpu.int() - dev.int()).abs().float()
    return {
        "images": len(datas),
        "pixel mean abs diff": pixel.mean().item(),
        "pixel max abs diff": pixel.max().item(),
        "logit max abs diff": (a - b).abs().max().item(),
        "logit std": a.std().item(),
        "top1 agreement": (a.argmax(1) == b.argmax(1)).float().mean().item(),
        "top5 overlap": np.mean([len(set(x.tolist()) & set(y.tolist())) / 5
                                 for x, y in zip(a.topk(5).indices, b.topk(5).indices, strict=True)]),
        "weights": "random (seed 0): no pretrained weights are reachable offline",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--actors", type=int, nargs="*", default=[1, 2, 4],
                        help="model processes sharing the GPU in the multi-actor end-to-end step")
    parser.add_argument("--steps", nargs="*", choices=STEPS, default=list(STEPS),
                        help="which measurements (default all; a device call has 10 minutes)")
    parser.add_argument("--json", type=Path, default=Path("bench/results/gpu.json"))
    args = parser.parse_args()
    workers = max(1, (os.cpu_count() or 2) - 1)
    report: dict = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if DEVICE.type == "cuda" else platform.processor() or "cpu",
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "model": MODEL,
    }

    def step(name: str, fn):
        start = time.perf_counter()
        report[name] = fn()
        print(f"{name} ({time.perf_counter() - start:.0f} s): {json.dumps(report[name], indent=1)}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="gnbench-"))
    step("images", lambda: {"count": len(make_jpegs(work / "jpegs", args.images))})
    paths = sorted((work / "jpegs").glob("*.jpg"))
    datas = [p.read_bytes() for p in paths]
    if "model_only" in args.steps:
        step("model_only", lambda: model_only(args.batch, compiled=not args.no_compile))
    if "decode_only" in args.steps:
        step("decode_only", lambda: decode_only(datas, workers, 256))
    if "end_to_end" in args.steps:
        for leave in (False, True):
            step(f"end_to_end_{'device' if leave else 'cpu'}_decode",
                 lambda leave=leave: end_to_end(paths, leave, workers, args.batch, work))
    if "actors" in args.steps:
        for actors in args.actors:
            for compiled in (False, True) if not args.no_compile else (False,):
                step(f"end_to_end_device_decode_{actors}_actors{'_compiled' if compiled else ''}",
                     lambda a=actors, c=compiled: end_to_end_actors(paths, a, args.batch, c, work))
    if "model_only" in report and "end_to_end_device_decode" in report:
        report["ratio end-to-end device decode / model-only ours eager + channel weights"] = (
            report["end_to_end_device_decode"]["img/s"] / report["model_only"]["ours eager + channel weights"]
        )
    if "agreement" in args.steps:
        step("agreement", lambda: agreement(paths[:512]))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
