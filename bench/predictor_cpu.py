"""Where `pipeline.predict.Predictor.__call__` spends a CPU batch, and what `torch.compile` costs
and gains on the CPU. No Ray: the actor class runs in this process, as Ray runs it in an actor.

Step ``breakdown``: the real ``Predictor`` (ghostnet_100, random weights, 1000 classes, top-5, no
embeddings: the run's defaults) at the torch thread count a 1-CPU actor gets (1), on batches of 32
JPEGs (500x375 / 375x500 cut from real photos) already through the decode stage function
(``pipeline.decode.read_and_decode``, raw crops, as the actor receives them). Each timed call is
split by wrapping the Predictor's own parts: ``_inputs`` (bytes -> one uint8 array), ``to_input``
(normalise to a channels_last tensor), the model's ``forward_all``; the rest of ``__call__``
(softmax, top-k, host copies, channel-weight summaries and partials, the Arrow rows) is the call
minus those. Medians over the rounds. Measured alone: in a run the decode tasks share the cores.

Step ``compile``: ghostnet_050 (random weights), batch 32, 1 thread, each case in a fresh process
with its own inductor cache folder: the actor's compile (``Predictor(compile=True)``, static batch)
with an empty cache (cold) and again with the cache the first one filled (warm); optionally a
dynamic-batch graph, cold (``--dynamic``). In the warm process, eager vs compiled forward per batch,
interleaved rounds, medians.

    python bench/predictor_cpu.py [--steps breakdown compile] [--rounds 15] [--dynamic]
        [--out bench/results/predictor_cpu.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BATCH = 32
THREADS = 1  # what Ray gives a 1-CPU actor (OMP_NUM_THREADS=1); bench/cpu_pipeline.py reads it from Ray


def median_ms(values: list[float]) -> float:
    return round(1000 * statistics.median(values), 1)


def decoded_batches(model_name: str, count: int, scratch: Path):
    """Arrow batches of :data:`pipeline.schema.DECODED`, as the decode stage hands them to the actor."""
    import pyarrow as pa

    from bench.gpu import make_jpegs
    from pipeline import decode
    from pipeline.model import ModelSpec
    from pipeline.schema import ITEMS, SHARD

    meta = ModelSpec(model_name, "random").load().meta
    paths = [str(p) for p in make_jpegs(scratch / "jpegs", count * BATCH)]
    batches = []
    for start in range(0, len(paths), BATCH):
        uris = paths[start : start + BATCH]
        items = pa.table({"uri": uris, "etag": [None] * len(uris), "size_bytes": [None] * len(uris),
                          "modality": ["image"] * len(uris), SHARD: [0] * len(uris)},
                         schema=ITEMS.append(pa.field(SHARD, pa.int32())))
        batches.append(decode.read_and_decode(items, metas=[meta]))
    return batches


class Clock:
    """Wraps callables so that each records its seconds per call."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - started

        return timed


def breakdown(model_name: str, rounds: int) -> dict:
    import torch

    from pipeline.model import ModelSpec
    from pipeline.predict import Predictor

    with tempfile.TemporaryDirectory(prefix="predictor-cpu-") as scratch:
        batches = decoded_batches(model_name, 4, Path(scratch))
    predictor = Predictor(ModelSpec(model_name, "random"), run_id="bench", torch_threads=THREADS)
    assert torch.get_num_threads() == THREADS
    clock = Clock()
    predictor._inputs = clock.wrap("inputs", predictor._inputs)
    predictor.to_input = clock.wrap("normalise", predictor.to_input)
    predictor.model.forward_all = clock.wrap("model", predictor.model.forward_all)
    parts: dict[str, list[float]] = {"call": [], "inputs": [], "normalise": [], "model": [], "rest": []}
    for i in range(rounds + 2):
        batch = batches[i % len(batches)]
        clock.spent.clear()
        started = time.perf_counter()
        rows = predictor(batch)
        call = time.perf_counter() - started
        if rows.num_rows != batch.num_rows or set(rows["status"].to_pylist()) != {"ok"}:
            raise RuntimeError(f"the Predictor did not label every row: {rows['status'].value_counts()}")
        if i < 2:
            continue  # warm-up
        parts["call"].append(call)
        for name in ("inputs", "normalise", "model"):
            parts[name].append(clock.spent[name])
        parts["rest"].append(call - sum(clock.spent.values()))
    ms = {name: median_ms(values) for name, values in parts.items()}
    return {
        "model": model_name, "batch": BATCH, "torch_threads": THREADS, "rounds": rounds,
        "topk": predictor.topk, "embeddings": predictor.embeddings,
        "ms_per_batch_median": ms,
        "share_of_call": {name: round(ms[name] / ms["call"], 3) for name in ("inputs", "normalise", "model", "rest")},
        "outside_model_ms": round(ms["call"] - ms["model"], 1),
        "img_per_s_call": round(BATCH / statistics.median(parts["call"]), 2),
    }


def compile_case(model_name: str, mode: str, rounds: int) -> dict:
    """Run in a fresh process (``--compile-case``) whose TORCHINDUCTOR_CACHE_DIR the parent chose."""
    import numpy as np
    import torch

    import ghostnet
    from pipeline.model import ModelSpec
    from pipeline.predict import Predictor

    torch.set_num_threads(THREADS)
    spec = ModelSpec(model_name, "random")
    result: dict = {"mode": mode, "torch_threads": torch.get_num_threads()}
    eager = Predictor(spec, run_id="bench", torch_threads=THREADS, batch_size=BATCH)
    if mode in ("static-cold", "static-warm"):  # the actor's own compile (Predictor(compile=True) calls it)
        started = time.perf_counter()
        eager._compiled = eager._compile()
        result["compile_s"] = round(time.perf_counter() - started, 2)
        if eager._compiled is None:
            raise RuntimeError("torch.compile failed in the Predictor (see its warning)")
        compiled_forward = eager._forward_compiled
    else:  # dynamic-cold: the same traced forward with a dynamic batch dimension
        traced = ghostnet.channel_weights.traceable_forward_all(copy.deepcopy(eager.model), embeddings=False)
        graph = torch.compile(traced, fullgraph=True, dynamic=True)
        started = time.perf_counter()
        with torch.inference_mode():
            graph(eager._example_input())
        result["compile_s"] = round(time.perf_counter() - started, 2)
        compiled_forward = graph
    if mode == "static-cold":
        return result
    _, height, width = eager.meta.input_size
    rng = np.random.default_rng(0)
    x = eager.to_input(rng.integers(0, 256, (BATCH, height, width, 3), dtype=np.uint8))
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    with torch.inference_mode():
        for i in range(rounds + 2):
            for name, fn in (("eager", lambda: eager.model.forward_all(x, embeddings=False)),
                             ("compiled", lambda: compiled_forward(x))):
                started = time.perf_counter()
                fn()
                if i >= 2:
                    times[name].append(time.perf_counter() - started)
    result.update({f"{name}_ms_per_batch_median": median_ms(values) for name, values in times.items()})
    result["rounds"] = rounds
    return result


def compile_step(model_name: str, rounds: int, dynamic: bool) -> dict:
    cases = {}
    with tempfile.TemporaryDirectory(prefix="inductor-cache-") as cache:
        modes = ["static-cold", "static-warm"]
        for mode in modes:
            cases[mode] = _in_subprocess(model_name, mode, rounds, cache)
            print(f"compile {mode}: {cases[mode]}", flush=True)
    if dynamic:
        with tempfile.TemporaryDirectory(prefix="inductor-cache-") as cache:
            cases["dynamic-cold"] = _in_subprocess(model_name, "dynamic-cold", rounds, cache)
            print(f"compile dynamic-cold: {cases['dynamic-cold']}", flush=True)
    return {"model": model_name, "batch": BATCH, "torch_threads": THREADS, "cases": cases}


def _in_subprocess(model_name: str, mode: str, rounds: int, cache: str) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "OMP_NUM_THREADS": str(THREADS)}
    done = subprocess.run(
        [sys.executable, __file__, "--compile-case", mode, "--compile-model", model_name, "--rounds", str(rounds)],
        capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"compile case {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", nargs="+", choices=["breakdown", "compile"], default=["breakdown", "compile"])
    parser.add_argument("--model", default="ghostnet_100", help="model of the breakdown step")
    parser.add_argument("--compile-model", default="ghostnet_050", help="model of the compile step")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--dynamic", action="store_true", help="also compile a dynamic-batch graph (cold)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "predictor_cpu.json")
    parser.add_argument("--compile-case", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compile_case:
        print(json.dumps(compile_case(args.compile_model, args.compile_case, args.rounds)))
        return

    import torch

    from bench.model_cpu import cpu_name

    load_at_start = os.getloadavg()[0]
    report: dict = {
        "benchmark": "Predictor.__call__ time breakdown and torch.compile on the CPU",
        "script": "bench/predictor_cpu.py",
        "argv": sys.argv[1:],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
    loads = {"start": load_at_start}
    if "breakdown" in args.steps:
        report["breakdown"] = breakdown(args.model, args.rounds)
        loads["after_breakdown"] = os.getloadavg()[0]
        print(f"breakdown: {report['breakdown']}", flush=True)
    if "compile" in args.steps:
        report["compile"] = compile_step(args.compile_model, args.rounds, args.dynamic)
    loads["end"] = os.getloadavg()[0]
    report["load_avg_1min"] = loads
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
