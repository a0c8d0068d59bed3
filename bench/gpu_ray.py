"""GPU through Ray: `ghostnet-pipeline run` itself on local JPEGs, in one device call.

The device machine has no Ray, so Ray comes from the carry (tools/pack_ray_for_gpu_machine.sh);
this script unpacks it, generates the JPEGs (500x375 / 375x500 cut from real photos, in parallel),
then runs the CLI as a user would, once per configuration, each run with its own private local
Ray that sees the GPU:

- 1, 2 and 4 actors per GPU (``--actors N --gpus-per-actor 1/N``),
- device and CPU decode (``--decode device|cpu``),
- eager and ``--compile``,

with ghostnet_100 and random weights, sampling GPU busy % and memory with nvidia-smi during each
run; and two ghostnet_100 weights in one run against two separate runs (``two_models``, issue 24:
decode-bound on a GPU, so about 2x is expected; prepared, not yet run on a GPU). In the same call,
in a child process each: model only (our fused model with channel weights, fp16 channels_last,
eager and compiled) and decode only (Pillow in a process pool vs nvJPEG on the GPU), from
bench/gpu.py.

The CLI is ``python -m jobs.cli run``: ``ghostnet-pipeline run`` itself (the console script is
not installed from the carry). DuckDB, which the carry has no room for, is the analytics extra:
only query, report and the drift alert need it.

Throughput of each run, three ways (the JSON keeps all, the summary prints the first two):
- ``record_items_per_s``: the run's own record (``_runs/<id>.json``, items / inference_s, which
  spans Ray's start, the actors' start (and compile) and the labeling); read from the summary
  line's record path;
- ``wall_items_per_s``: items / wall time around the CLI process (adds imports, listing, the commit);
- ``gpu_active_items_per_s``: items / the span of nvidia-smi samples with the GPU busy (an
  estimate of the steady rate; compile's own kernels count as busy too).

    python3 bench/gpu_ray.py --carry .gpu-carry/ray-carry-py312.tar.xz --out "$OUT"
    python3 bench/gpu_ray.py --carry ... --out ... --steps runs --compile-modes compiled   # a split
    python3 bench/gpu_ray.py --carry .gpu-carry/ray-carry-py311.tar.xz --images 64 --out /tmp/o  # CPU smoke
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "ghostnet_100"
STEPS = ("model_only", "decode_only", "runs", "peers", "two_models")
DECODES = ("device", "cpu")
COMPILE_MODES = ("eager", "compiled")
# A run that starts with less than this left of --budget-s is skipped (its first estimate).
FIRST_ESTIMATE_S = {"eager": 45.0, "compiled": 90.0}
# A sample at or above this counts as the GPU at work; the span of such samples is the "active" window.
BUSY_PCT = 10
SUMMARY_SPEED = re.compile(r"speed:\s+([\d.]+) items/s, ([\d.]+) s elapsed")
SUMMARY_RECORD = re.compile(r"run record: (\S+?\.json)")


@dataclass(frozen=True)
class RunSpec:
    actors: int
    gpus_per_actor: float
    decode: str
    compiled: bool

    @property
    def name(self) -> str:
        gpu = f"{self.actors}x{self.gpus_per_actor:g}gpu" if self.gpus_per_actor else f"{self.actors}xcpu"
        return f"{gpu}-{self.decode}-{'compiled' if self.compiled else 'eager'}"

    def flags(self) -> list[str]:
        flags = ["--decode", self.decode, "--actors", str(self.actors), "--gpus-per-actor", f"{self.gpus_per_actor:g}"]
        return [*flags, "--compile"] if self.compiled else flags


# --- the device ------------------------------------------------------------------------------

def gpu_names() -> list[str]:
    """GPUs nvidia-smi lists; none where there is no nvidia-smi. Keeps CUDA out of this process."""
    if not shutil.which("nvidia-smi"):
        return []
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return [line for line in listed.stdout.splitlines() if line.startswith("GPU ")]


class GpuSampler:
    """nvidia-smi's utilization.gpu and memory.used, every ``ms`` milliseconds, while in a ``with``."""

    def __init__(self, path: Path, ms: int, enabled: bool):
        self.path, self.ms, self.enabled = path, ms, enabled
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> GpuSampler:
        if self.enabled:
            self.process = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                 "-lms", str(self.ms)],
                stdout=self.path.open("w"), stderr=subprocess.DEVNULL,
            )
        return self

    def __exit__(self, *exc) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=10)

    def summary(self, items: int) -> dict:
        if not self.enabled:
            return {"gpu": "none: not sampled"}
        samples = [tuple(float(v) for v in line.split(",")) for line in self.path.read_text().splitlines()
                   if re.fullmatch(r"\s*[\d.]+\s*,\s*[\d.]+\s*", line)]
        if not samples:
            return {"gpu": "nvidia-smi gave no samples"}
        util = [u for u, _ in samples]
        busy = [i for i, u in enumerate(util) if u >= BUSY_PCT]
        active = util[busy[0]: busy[-1] + 1] if busy else []
        active_s = len(active) * self.ms / 1000
        return {
            "samples": len(samples),
            "sample_ms": self.ms,
            "gpu_busy_mean_pct": sum(util) / len(util),
            "gpu_busy_mean_pct_active": sum(active) / len(active) if active else 0.0,
            "gpu_active_s": active_s,
            "gpu_active_items_per_s": items / active_s if active_s else None,
            "gpu_memory_max_mib": max(m for _, m in samples),
            "gpu_busy_pct_series": util,
        }


# --- steps that run in a child process (CUDA and its memory go away with it) ------------------

def in_child(fn, *args):
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def make_images(folder: str, count: int) -> int:
    from bench import gpu

    return len(gpu.make_jpegs(Path(folder), count))


def model_only(batch: int, compiled: bool) -> dict:
    """Our fused model with channel weights (what the actor runs), eager and compiled; img/s."""
    import torch

    import ghostnet
    from bench import gpu

    model = ghostnet.create_model(MODEL)
    ghostnet.init_random(model, 0)
    dtype = torch.float16 if gpu.DEVICE.type == "cuda" else torch.float32
    model = ghostnet.for_inference(model).to(gpu.DEVICE, dtype).to(memory_format=torch.channels_last).eval()
    x = torch.randn(batch, 3, 224, 224, device=gpu.DEVICE, dtype=dtype).contiguous(memory_format=torch.channels_last)
    iters = 30 if gpu.DEVICE.type == "cuda" else 3
    result: dict = {"device": str(gpu.DEVICE), "batch": batch, "dtype": str(dtype)}
    with torch.inference_mode():
        result["eager img/s"] = batch / gpu.timed(lambda: model.forward_all(x, embeddings=False),
                                                  warmup=3, iters=iters)
        if compiled:
            start = time.perf_counter()
            fn = torch.compile(lambda x: model.forward_all(x, embeddings=False))
            fn(x)
            gpu.sync()
            result["compile s"] = time.perf_counter() - start
            result["compiled img/s"] = batch / gpu.timed(lambda: fn(x), warmup=3, iters=iters)
    return result


def decode_only(folder: str, count: int, workers: int, batch: int) -> dict:
    from bench import gpu

    paths = sorted(Path(folder).glob("*.jpg"))[:count]
    rates = gpu.decode_only([p.read_bytes() for p in paths], workers, batch)
    return {"images": len(paths), "device": str(gpu.DEVICE), **rates}


# --- the CLI runs ------------------------------------------------------------------------------

def planned_runs(args: argparse.Namespace, gpus: int) -> list[RunSpec]:
    if not gpus:
        return [RunSpec(1, 0.0, "cpu", False)]
    return [RunSpec(per_gpu * gpus, 1 / per_gpu, decode, mode == "compiled")
            for mode in args.compile_modes for decode in args.decode for per_gpu in args.actors_per_gpu]


def cli_command(spec: RunSpec, images: Path, output: Path, batch_size: int | None) -> list[str]:
    command = [sys.executable, "-m", "jobs.cli", "run", "--input", str(images), "--output", str(output),
               "--model", MODEL, "--weights", "random", *spec.flags()]
    return [*command, "--batch-size", str(batch_size)] if batch_size else command


def run_cli(command: list[str], env: dict, log: Path, timeout_s: float) -> tuple[int, float]:
    """The CLI in its own session (so a timeout ends its whole Ray with it); (exit code, wall s)."""
    start = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            code = 124
    return code, time.perf_counter() - start


def run_record(text: str, output: Path) -> dict:
    """The run's record, found through the summary line's record path (relative to the output)."""
    match = SUMMARY_RECORD.search(text)
    candidates = [output / match.group(1)] if match else []
    candidates += sorted(output.glob("_runs/*.json"))
    for path in candidates:
        if path.is_file():
            return json.loads(path.read_text())
    return {}


def measure_run(spec: RunSpec, images: Path, count: int, work: Path, env: dict, args, gpus: int,
                timeout_s: float) -> dict:
    output = work / "out" / spec.name
    command = cli_command(spec, images, output, args.batch_size)
    log = work / f"{spec.name}.log"
    with GpuSampler(work / f"{spec.name}.smi.csv", args.smi_ms, enabled=bool(gpus)) as sampler:
        code, wall = run_cli(command, env, log, timeout_s)
    text = log.read_text(errors="replace")
    result: dict = {"command": " ".join(command[1:]), "exit_code": code, "wall_s": wall,
                    "wall_items_per_s": count / wall if code == 0 else None}
    speed = SUMMARY_SPEED.search(text)
    if speed:
        result["summary_items_per_s"], result["summary_elapsed_s"] = float(speed.group(1)), float(speed.group(2))
    record = run_record(text, output) if code == 0 else {}
    result["record_items_per_s"] = record.get("items_per_s")
    result["record_rows_per_status"] = record.get("rows_per_status")
    result["record_timings"] = record.get("timings")
    result.update(sampler.summary(count))
    if code != 0:
        result["log_tail"] = text[-3000:]
    shutil.rmtree(output, ignore_errors=True)
    return result


def write_two_weights(folder: str) -> list[str]:
    """Two ghostnet_100 weights files (random, seeds 1 and 2): two identities of one architecture."""
    import ghostnet

    paths = []
    for seed in (1, 2):
        model = ghostnet.create_model(MODEL)
        ghostnet.init_random(model, seed)
        path = Path(folder) / f"{MODEL}-seed{seed}.safetensors"
        ghostnet.save_weights(model, path, model.meta)
        paths.append(str(path))
    return paths


def two_models(args: argparse.Namespace, images: Path, work: Path, env: dict, gpus: int, timeout_s: float) -> dict:
    """Both weights in one run, against one run per weights file, over the same JPEGs: device decode,
    one eager actor per GPU; seconds of each side, and the ratio of the rates (same pairs labeled)."""
    weights = in_child(write_two_weights, str(work))
    spec = RunSpec(max(1, gpus), 1.0 if gpus else 0.0, "device" if gpus else "cpu", False)
    flags = [*spec.flags(), *(["--batch-size", str(args.batch_size)] if args.batch_size else [])]
    result: dict = {"flags": " ".join(flags), "images": args.images}
    for side, runs in (("one_run", [weights]), ("separate_runs", [[w] for w in weights])):
        walls = []
        for i, chosen in enumerate(runs):
            output = work / "out" / f"two-{side}-{i}"
            models = [flag for w in chosen for flag in ("--model", MODEL, "--weights", w)]
            command = [sys.executable, "-m", "jobs.cli", "run", "--input", str(images), "--output", str(output),
                       *models, *flags]
            log = work / f"two-{side}-{i}.log"
            with GpuSampler(work / f"two-{side}-{i}.smi.csv", args.smi_ms, enabled=bool(gpus)) as sampler:
                code, wall = run_cli(command, env, log, timeout_s)
            if code != 0:
                tail = log.read_text(errors="replace")[-3000:]
                return {**result, "failed": side, "exit_code": code, "log_tail": tail}
            walls.append(wall)
            result[f"{side}_{i}_gpu"] = sampler.summary(args.images * len(chosen))
            shutil.rmtree(output, ignore_errors=True)
        result[f"{side}_wall_s"] = sum(walls)
    result["ratio_one_run_over_separate"] = result["separate_runs_wall_s"] / result["one_run_wall_s"]
    return result


# --- the report ------------------------------------------------------------------------------

def environment(gpus: list[str], carry: Path) -> dict:
    import importlib.metadata as md

    versions = {}
    for name in ("torch", "torchvision", "pyarrow", "pandas", "numpy"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "gpus": gpus,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
        "carry": {"path": str(carry), "bytes": carry.stat().st_size},
        "model": MODEL,
        "weights": "random",
    }


def carry_env(carry: Path, dest: Path) -> dict:
    """The environment of a CLI run: the repo and the unpacked carry first on PYTHONPATH."""
    import runpy

    unpack = runpy.run_path(str(ROOT / "tools" / "unpack_carry.py"))
    site = unpack["unpack"](carry, dest)
    for problem in unpack["unmet_requirements"](site):
        print(f"carry: {problem}", flush=True)
    return {**os.environ, **unpack["environment"](site, ROOT), "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def print_summary(report: dict) -> None:
    print("\nrun                          exit  record it/s  wall it/s  gpu-active it/s  busy% (active)  mem MiB")
    for name, r in report.get("runs", {}).items():
        if "skipped" in r:
            print(f"{name:<28} skipped: {r['skipped']}")
            continue
        busy = r.get("gpu_busy_mean_pct")
        print(f"{name:<28} {r['exit_code']:>4}  {_num(r.get('record_items_per_s')):>11}  "
              f"{_num(r.get('wall_items_per_s')):>9}  {_num(r.get('gpu_active_items_per_s')):>15}  "
              f"{_num(busy):>5} ({_num(r.get('gpu_busy_mean_pct_active'))})  {_num(r.get('gpu_memory_max_mib'))}")
    for step in ("model_only", "decode_only"):
        if step in report:
            print(f"{step}: {json.dumps(report[step])}")


def _num(value) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--carry", type=Path, required=True, help="the .tar.xz from tools/pack_ray_for_gpu_machine.sh")
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_ray.json and the run logs")
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--actors-per-gpu", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--decode", nargs="+", choices=DECODES, default=list(DECODES))
    parser.add_argument("--compile-modes", nargs="+", choices=COMPILE_MODES, default=list(COMPILE_MODES))
    parser.add_argument("--batch-size", type=int, help="passed to the CLI (default: the CLI's own)")
    parser.add_argument("--model-batch", type=int, help="model-only batch (default 512 with a GPU, 8 without)")
    parser.add_argument("--smi-ms", type=int, default=1000, help="nvidia-smi sampling interval")
    parser.add_argument("--budget-s", type=float, default=560,
                        help="start no run that the runs so far say would end after this many seconds")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a new temp dir)")
    parser.add_argument("--peers-python", default=sys.executable,
                        help="step peers: a Python that imports daft (default: this one)")
    return parser.parse_args()


class Report:
    """The JSON on disk, rewritten after every step, so that a call cut short keeps what ran."""

    def __init__(self, path: Path, data: dict):
        self.path, self.data = path, data
        self.save()

    def save(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=1))

    def step(self, name: str, fn, *args) -> None:
        start = time.perf_counter()
        self.data[name] = in_child(fn, *args)
        print(f"{name} ({time.perf_counter() - start:.0f} s): {json.dumps(self.data[name])}", flush=True)
        self.save()


def run_all(args: argparse.Namespace, report: Report, images: Path, env: dict, gpus: int, started: float,
            work: Path) -> None:
    """The CLI runs in order, each skipped when the longest run of its kind so far would overrun --budget-s."""
    if not gpus:
        print("no GPU: the GPU runs are skipped; one CPU-actor run proves the path through the carry")
    runs = report.data.setdefault("runs", {})
    took: dict[bool, float] = {}
    for spec in planned_runs(args, gpus):
        left = args.budget_s - (time.perf_counter() - started)
        estimate = took.get(spec.compiled, FIRST_ESTIMATE_S["compiled" if spec.compiled else "eager"])
        if estimate > left:
            runs[spec.name] = {"skipped": f"{left:.0f} s of --budget-s left, estimated {estimate:.0f} s"}
            continue
        result = measure_run(spec, images, args.images, work, env, args, gpus, timeout_s=left)
        took[spec.compiled] = max(took.get(spec.compiled, 0.0), result["wall_s"])
        runs[spec.name] = result
        print(f"{spec.name}: exit {result['exit_code']}, {result['wall_s']:.0f} s, record "
              f"{_num(result.get('record_items_per_s'))} items/s, wall {_num(result.get('wall_items_per_s'))}, "
              f"GPU busy {_num(result.get('gpu_busy_mean_pct'))}%", flush=True)
        report.save()


def run_peers(args: argparse.Namespace, report: Report, images: Path, env: dict, gpus: int, work: Path) -> None:
    """PREPARED, NOT YET RUN ON A GPU (no device was lent to the session that wrote it, 2026-12-02):
    the GPU form of bench/peers.py on the same JPEGs, one run each, fresh processes: ours (``run``,
    defaults: fp16 actors on the GPUs, device decode), Ray Data as its guide teaches (one actor per
    GPU, ``--device cuda``) and Daft as its docs teach (``@daft.cls(gpus=1)``), with the weights of
    ghostnet_100 (random, seed 0) in one safetensors file. Daft is not in the carry: it runs only
    where ``--peers-python`` names a Python that imports it; otherwise it is reported as skipped.
    Wall time per system and ratios ours/peer go into ``peers`` of gpu_ray.json."""
    results = report.data.setdefault("peers", {"note": "prepared code; first run on a GPU pending"})
    weights = work / f"{MODEL}.safetensors"
    subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[2]); import ghostnet; "
                    "m = ghostnet.create_model('ghostnet_100'); ghostnet.init_random(m, 0); "
                    "ghostnet.save_weights(m, sys.argv[1])", str(weights), str(ROOT)], env=env, check=True)
    device = "cuda" if gpus else "cpu"
    commands = {
        "ours": [sys.executable, "-m", "jobs.cli", "run", "--input", str(images), "--model", MODEL,
                 "--weights", str(weights), "--output"],
        "raydata": [sys.executable, str(ROOT / "bench" / "peer_jobs.py"), "raydata", "--input", str(images),
                    "--weights", str(weights), "--device", device, "--output"],
        "daft": [args.peers_python, str(ROOT / "bench" / "peer_jobs.py"), "daft", "--input", str(images),
                 "--weights", str(weights), "--device", device, "--output"],
    }
    for system, command in commands.items():
        if system == "daft" and subprocess.run([args.peers_python, "-c", "import daft"], env=env,
                                               capture_output=True, check=False).returncode:
            results[system] = {"skipped": f"{args.peers_python} cannot import daft"}
            continue
        started = time.perf_counter()
        done = subprocess.run([*command, str(work / f"peer-{system}")], cwd=ROOT, env=env, capture_output=True,
                              text=True, check=False)
        wall = time.perf_counter() - started
        results[system] = {"exit_code": done.returncode, "wall_s": wall, "items_per_s_wall": args.images / wall,
                           "log_tail": (done.stdout + done.stderr)[-2000:]}
        report.save()
    ours = results.get("ours", {}).get("wall_s")
    for peer in ("raydata", "daft"):
        theirs = results.get(peer, {}).get("wall_s")
        if ours and theirs:
            results[f"wall_ours_over_{peer}"] = ours / theirs
    report.save()


def main() -> int:
    args = parse_args()
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="gnray-"))
    gpus = gpu_names()
    report = Report(args.out / "gpu_ray.json", environment(gpus, args.carry))
    env = carry_env(args.carry, work / "carry")
    print(f"carry unpacked in {time.perf_counter() - started:.0f} s; GPUs: {gpus or 'none'}", flush=True)
    images = work / "jpegs"
    report.step("images", make_images, str(images), args.images)
    if "model_only" in args.steps:
        report.step("model_only", model_only, args.model_batch or (512 if gpus else 8), bool(gpus))
    if "decode_only" in args.steps:
        workers = max(1, (os.cpu_count() or 2) - 1)
        report.step("decode_only", decode_only, str(images), min(args.images, 8192), workers, 256 if gpus else 16)
    if "runs" in args.steps:
        run_all(args, report, images, env, len(gpus), started, work)
    if "peers" in args.steps:
        run_peers(args, report, images, env, len(gpus), work)
    if "two_models" in args.steps:
        left = args.budget_s - (time.perf_counter() - started)
        report.data["two_models"] = two_models(args, images, work, env, len(gpus), timeout_s=max(60.0, left))
        print(f"two_models: {json.dumps(report.data['two_models'])}", flush=True)
        report.save()
    report.data["total_s"] = time.perf_counter() - started
    report.save()
    print_summary(report.data)
    print(f"\nwrote {report.path} ({report.data['total_s']:.0f} s)")
    return 0 if all(r.get("exit_code", 0) == 0 for r in report.data.get("runs", {}).values()) else 1


if __name__ == "__main__":
    sys.exit(main())
