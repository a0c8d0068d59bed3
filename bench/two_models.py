"""Two models in one run against two separate runs, side by side in one session (issue 24: CPU target
>= 1.10x; bound about 1.13x for 500x375 JPEGs: one decode of 7 core-ms saved against 2 x 23 core-ms of
ghostnet_100).

Both sides label the same JPEGs (500x375 / 375x500, cut from real photos, ``bench/gpu.py``) with two
ghostnet_100 weights (random, two seeds, as weights files): one ``run`` with ``--model ghostnet_100
--weights A --model ghostnet_100 --weights B``, or two ``run`` commands, one per model, into their own
outputs. All runs share one private local Ray with every core (started once, before the first run).

Each side runs at N and k*N items, ``repeats`` rounds, the sides' order alternating from round to
round. Two rates per side, in (item, model) pairs per second:

- end to end: pairs / (seconds of every run of the side at k*N), as a user sees it; the separate
  side pays its per-run costs (planning, actor start, model load) twice;
- marginal: (k*N - N) pairs / (median seconds at k*N - median seconds at N), per-run costs cancelled:
  the steady rate the bound is about.

The ratios are the one run's rate over the separate runs'. ``uptime``'s load is recorded before each
run: the machine is shared. So, beside the seconds, each run records the CPU seconds this process and
every process of its Ray spent on it (user and system, the reaped actors' included): on a loaded
machine the wall clock measures the neighbours as much as the run, the CPU seconds much less, and
where the run is CPU-bound the rates of a machine of its own are in the ratio of the CPU seconds
(read per process every 0.25 s, :class:`CpuClock`).

    python bench/two_models.py [--n 400] [--factor 3] [--repeats 3] [--out bench/results/two_models-cpu.json]
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
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil
import ray
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ghostnet
import pipeline.run as pipeline_run
from bench.gpu import make_jpegs
from bench.model_cpu import cpu_name
from pipeline.config import ModelEntry, RunConfig

MODEL = "ghostnet_100"
OBJECT_STORE = 400 * 2**20
TARGET = 1.10
SIDES = ("one_run", "separate_runs")


def weights_files(folder: Path) -> list[str]:
    """Two ghostnet_100 weights files (random, seeds 1 and 2): two model identities of one architecture."""
    paths = []
    for seed in (1, 2):
        model = ghostnet.create_model(MODEL)
        ghostnet.init_random(model, seed)
        path = folder / f"{MODEL}-seed{seed}.safetensors"
        ghostnet.save_weights(model, path, model.meta)
        paths.append(str(path))
    return paths


def label(folder: Path, output: Path, weights: list[str], **settings: object) -> tuple[float, dict]:
    config = RunConfig(inputs=(str(folder),), output=str(output),
                       models=tuple(ModelEntry(MODEL, w) for w in weights), **settings)
    started = time.perf_counter()
    record = pipeline_run.run(config)
    elapsed = time.perf_counter() - started
    if not record.committed or record.rows != record.items * len(weights):
        raise RuntimeError(f"the run did not label every item with every model: {record}")
    return elapsed, {"items": record.items, "models": len(weights), "elapsed_s": round(elapsed, 2),
                     "inference_s": record.timings.get("inference_s"), "stage_seconds": record.stage_seconds,
                     "model_busy": record.model_busy, "bound": record.bound}


class CpuClock:
    """CPU seconds (user and system) that this process and its descendants (its Ray: workers, actors)
    spend while it runs, read every ``every_s`` per process, so that a process that ends meanwhile
    (an actor when its run ends) keeps what it spent up to its last reading."""

    def __init__(self, every_s: float = 0.25) -> None:
        self.every_s = every_s
        self.first: dict[tuple[int, float], float] = {}
        self.last: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> CpuClock:
        self._read(first=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._read()

    @property
    def seconds(self) -> float:
        return sum(self.last[key] - self.first.get(key, 0.0) for key in self.last)

    def _poll(self) -> None:
        while not self._stop.wait(self.every_s):
            self._read()

    def _read(self, *, first: bool = False) -> None:
        try:
            processes = [psutil.Process(), *psutil.Process().children(recursive=True)]
        except psutil.Error:  # a process ended while the tree was walked: read it at the next poll
            return
        for process in processes:
            try:
                with process.oneshot():
                    key, times = (process.pid, process.create_time()), process.cpu_times()
            except psutil.Error:
                continue
            self.last[key] = times.user + times.system
            if first:
                self.first[key] = self.last[key]


def side(name: str, folder: Path, work: Path, weights: list[str], tag: str) -> dict:
    """One side at one size: the one run, or the two separate runs; seconds and CPU seconds in all."""
    load = os.getloadavg()[0]
    with CpuClock() as cpu:
        if name == "one_run":
            seconds, run = label(folder, work / f"out-{tag}", weights)
            runs = [run]
        else:
            timed = [label(folder, work / f"out-{tag}-{i}", [w]) for i, w in enumerate(weights)]
            seconds, runs = sum(s for s, _ in timed), [r for _, r in timed]
    return {"side": name, "items": runs[0]["items"], "seconds": round(seconds, 2),
            "cpu_seconds": round(cpu.seconds, 2), "load_1min": load, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--factor", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "two_models-cpu.json")
    args = parser.parse_args()
    date = datetime.now(timezone.utc)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    work = Path(tempfile.mkdtemp(prefix="gn2m-", dir="/tmp"))
    sizes = {"n": args.n, "kn": args.n * args.factor}
    rows = []
    try:
        make_jpegs(work / "all", sizes["kn"])
        folders = {"kn": work / "all", "n": work / "some", "warmup": work / "warmup"}
        for name, count in (("n", sizes["n"]), ("warmup", 32)):
            folders[name].mkdir()
            for path in sorted(folders["kn"].glob("*.jpg"))[:count]:
                os.link(path, folders[name] / path.name)
        weights = weights_files(work)
        ray.init(address="local", num_cpus=os.cpu_count(), object_store_memory=OBJECT_STORE,
                 include_dashboard=False, _temp_dir=str(work / "ray"), _node_ip_address="127.0.0.2",
                 logging_level="ERROR")
        side("one_run", folders["warmup"], work, weights, "warmup")
        for repeat in range(args.repeats):
            order = SIDES if repeat % 2 == 0 else SIDES[::-1]
            for size in ("n", "kn"):
                for name in order:
                    row = side(name, folders[size], work, weights, f"{name}-{size}-{repeat}")
                    rows.append({"repeat": repeat, "size": size, **row})
                    write_report(args, date, sizes, rows)
                    print(f"round {repeat} {name:>14} {row['items']:>5} items x 2 models: {row['seconds']:7.2f} s, "
                          f"{row['cpu_seconds']:7.2f} CPU s (load {row['load_1min']:.1f})", flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)

    summary = write_report(args, date, sizes, rows)
    print(json.dumps({"rates": summary["rates"], "ratios": summary["ratio_one_run_over_separate"],
                      "load": summary["load_avg_1min"]}, indent=2))


def write_report(args: argparse.Namespace, date: datetime, sizes: dict[str, int], rows: list[dict]) -> dict:
    """The results file from the runs so far (rewritten after each, so a cut-short session keeps them)."""
    def median(name: str, size: str, what: str) -> float | None:
        found = [r[what] for r in rows if r["side"] == name and r["size"] == size and what in r]
        return statistics.median(found) if found else None

    pairs = {size: 2 * count for size, count in sizes.items()}
    rates: dict[str, dict[str, float | None]] = {}
    for name in SIDES:
        rates[name] = {}
        for what, unit in (("seconds", "pairs_per_s"), ("cpu_seconds", "pairs_per_cpu_s")):
            small, large = median(name, "n", what), median(name, "kn", what)
            rates[name][f"end_to_end_{unit}"] = round(pairs["kn"] / large, 2) if large else None
            rates[name][f"marginal_{unit}"] = (round((pairs["kn"] - pairs["n"]) / (large - small), 2)
                                               if large and small and large > small else None)

    def ratio(kind: str) -> float | None:
        one, separate = rates["one_run"][kind], rates["separate_runs"][kind]
        return round(one / separate, 3) if one and separate else None

    ratios = {kind: ratio(kind) for kind in rates["one_run"]}
    report = {
        "benchmark": "two ghostnet_100 models: one run against two separate runs over the same JPEGs",
        "date": date.isoformat(timespec="seconds"),
        "device": {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__},
        "load_avg_1min": {"min": min((r["load_1min"] for r in rows), default=None),
                          "max": max((r["load_1min"] for r in rows), default=None)},
        "model": MODEL, "weights": "random, seeds 1 and 2 (weights files)", "jpegs": "500x375 / 375x500",
        "sizes": sizes, "repeats": args.repeats, "rounds_done": len({r["repeat"] for r in rows}), "target": TARGET,
        "rates": rates, "ratio_one_run_over_separate": ratios,
        "meets_target": {kind: None if value is None else value >= TARGET for kind, value in ratios.items()},
        "runs": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
