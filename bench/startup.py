"""Where the fixed cost of a small run goes: `ghostnet-pipeline run` on 32 images, end to end, in a
fresh process each time, with a timeline of its phases.

Each run is ``python bench/startup.py --child ...`` (a fresh interpreter): it imports the CLI, wraps
the pipeline's own functions with timers (listing, the driver's model check, opening the tables,
Ray's start, recovery, the plan, the Ray Data plan, each commit, Ray's shutdown), swaps in a
model stage that notes when its actor process started and how long its ``__init__`` (the models'
load) took, and runs ``jobs.cli.main`` with the real flags. The parent times the whole
process (wall, from ``Popen`` to exit) and the interpreter's start (to the child's first line).
The events are wall-clock times in one file, so overlapping phases show as overlaps.

Modes, interleaved round-robin so that the machine's load hits them alike:
- ``local``: no address; the run starts (and shuts down) its own private local Ray;
- ``address``: a Ray started once beforehand (``ray start --head``, what a user keeps running in
  another terminal), reused by every run with ``--address``: the interactive way;
- ``baseline``: ``local`` on another checkout (``--baseline-root``, e.g. the code before a change),
  so that a change's effect is measured side by side under the same load.

    python bench/startup.py [--images 32] [--repeats 3] [--modes local address] [--engine torch]
        [--out bench/results/startup.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if "--child" not in sys.argv:  # a child imports the checkout its PYTHONPATH names (baseline or this one)
    sys.path.insert(0, str(ROOT))

MODEL = "ghostnet_100"
TRACE = "GHOSTNET_STARTUP_TRACE"  # the folder where the child and its actors write their events
MODES = ("local", "address", "baseline")
RUN_TIMEOUT_S = 600


# --- the child: one run, instrumented -----------------------------------------------------------

def _event(name: str, start: float, end: float) -> None:
    folder = os.environ.get(TRACE)
    if folder:
        with open(Path(folder) / f"events-{os.getpid()}.jsonl", "a") as f:
            f.write(json.dumps({"name": name, "start": start, "end": end, "pid": os.getpid()}) + "\n")


def _timed(owner: object, attr: str, name: str) -> None:
    """Replace ``owner.attr`` with a wrapper that records each call's span as event ``name`` (nothing
    where the checkout under test has no such function)."""
    original = getattr(owner, attr, None)
    if original is None:
        return

    def wrapper(*args, **kwargs):
        start = time.time()
        try:
            return original(*args, **kwargs)
        finally:
            _event(name, start, time.time())

    setattr(owner, attr, wrapper)


def _process_start(pid: int) -> float:
    """When the process ``pid`` was created, on the wall clock (from /proc)."""
    start_ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    since_boot = float(Path("/proc/uptime").read_text().split()[0])
    return time.time() - since_boot + start_ticks / os.sysconf("SC_CLK_TCK")


def _instrument() -> None:
    import ray

    import pipeline.commit
    import pipeline.predict
    import pipeline.run
    from pipeline import cluster, plan, recovery, stages

    _timed(plan, "spill_listing", "listing")
    _timed(pipeline.run, "_checked_model", "driver_model_check")  # a checkout of one model per run
    _timed(pipeline.run, "_checked_models", "driver_model_check")
    _timed(pipeline.run, "_open_tables", "open_tables")
    _timed(ray, "init", "ray_init")
    _timed(ray, "shutdown", "ray_shutdown")
    if hasattr(cluster, "_Background"):  # Ray started in the background: the driver's wait for it
        _timed(cluster._Background, "join", "ray_join_wait")
    _timed(recovery, "recover_dead_runs", "recover_dead_runs")
    _timed(pipeline.run, "_plan", "plan")
    _timed(stages, "build", "ray_data_plan")
    _timed(pipeline.run, "_execute", "execute")
    _timed(pipeline.run, "_commit_stream", "execute")
    _timed(pipeline.commit.ShardCommitter, "add", "manifests")
    setattr(stages, "ModelStage" if hasattr(stages, "ModelStage") else "Predictor", TimedStage)


class TimedStage:
    """The run's model stage (``pipeline.predict.ModelStage``; ``Predictor`` in a checkout of one
    model per run) with its actor's process start and ``__init__`` span as events."""

    def __init__(self, *args, **kwargs) -> None:
        from pipeline import predict

        stage = getattr(predict, "ModelStage", predict.Predictor)
        start = time.time()
        _event("actor_process_to_init", _process_start(os.getpid()), start)
        self._stage = stage(*args, **kwargs)
        _event("actor_init", start, time.time())
        self._first = True

    def __call__(self, batch):
        start = time.time()
        rows = self._stage(batch)
        if self._first:
            _event("actor_first_batch", start, time.time())
            self._first = False
        return rows


def child(argv: list[str]) -> None:
    first_line = time.time()
    here = Path(__file__).resolve().parent  # bench/ itself, which Python put first: not a package root
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    _event("interpreter_to_first_line", _process_start(os.getpid()), first_line)
    import jobs.cli

    _instrument()
    _event("imports", first_line, time.time())
    _event(f"code from {Path(jobs.cli.__file__).resolve().parents[1]}", first_line, first_line)
    _timed(jobs.cli, "main", "cli_main")
    sys.argv = ["ghostnet-pipeline", *argv]
    if hasattr(jobs.cli, "entry"):  # what the console script runs: main, then the exit it chose
        jobs.cli.entry()
    sys.exit(jobs.cli.main())


# --- the parent ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        return s.getsockname()[1]


class RunningRay:
    """``ray start --head --block`` in its own process group, as a user keeps one for interactive work;
    stopped by signalling that group (the processes this script started), never with ``ray stop``."""

    def __init__(self, work: Path, env: dict) -> None:
        self.trace = work / "ray-trace"  # where its workers (the runs' actors) write their events
        self.trace.mkdir(exist_ok=True)
        env = {**env, TRACE: str(self.trace)}
        self.port = free_port()
        self.address = f"127.0.0.2:{self.port}"
        ray_bin = Path(sys.executable).with_name("ray")
        self.process = subprocess.Popen(
            [str(ray_bin), "start", "--head", "--block", f"--port={self.port}", "--node-ip-address=127.0.0.2",
             f"--num-cpus={os.cpu_count()}", "--include-dashboard=false", f"--temp-dir={work / 'ray'}",
             f"--object-store-memory={512 * 2**20}", "--disable-usage-stats"],
            env=env, stdout=(work / "ray-start.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._wait(env)

    def _wait(self, env: dict) -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            probe = subprocess.run([str(Path(sys.executable).with_name("ray")), "status", f"--address={self.address}"],
                                   env=env, capture_output=True, text=True, check=False)
            # Up once a node (its raylet) has registered, not merely the GCS: `ray start` gives up on
            # a raylet that misses 30 s, which a loaded machine sees.
            if probe.returncode == 0 and "1 node" in probe.stdout.replace("node_", "node ") and self.alive():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.process.returncode}")
            time.sleep(1)
        raise RuntimeError("ray start did not come up in 120 s")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        with_group = self.process.pid  # its own session: the group id is its pid
        try:
            os.killpg(with_group, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(with_group, signal.SIGKILL)


def one_run(mode: str, images: Path, weights: Path, work: Path, env: dict, extra: list[str],
            ray_running: RunningRay | None, root: Path = ROOT) -> dict:
    address = ray_running.address if ray_running else None
    trace = Path(tempfile.mkdtemp(prefix="trace-", dir=work))
    output = work / f"out-{trace.name}"
    argv = ["run", "--input", str(images), "--output", str(output), "--model", MODEL, "--weights", str(weights),
            *extra, *(["--address", address] if address else [])]
    started = time.time()
    done = subprocess.run([sys.executable, __file__, "--child", *argv], cwd=root,
                          env={**env, TRACE: str(trace), "PYTHONPATH": str(root)}, capture_output=True, text=True,
                          check=False, timeout=RUN_TIMEOUT_S)
    ended = time.time()
    if done.returncode:
        raise RuntimeError(f"run failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-3000:]}")
    files = [*trace.glob("events-*.jsonl"), *(ray_running.trace.glob("events-*.jsonl") if ray_running else [])]
    events = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    for f in files:
        f.unlink()
    shutil.rmtree(trace, ignore_errors=True)
    shutil.rmtree(output, ignore_errors=True)
    return {"mode": mode, "wall_s": round(ended - started, 3), "load_avg_1min": os.getloadavg()[0],
            "phases": phases(events, started, ended), "events": rel(events, started)}


def rel(events: list[dict], origin: float) -> list[dict]:
    return [{**e, "start": round(e["start"] - origin, 3), "end": round(e["end"] - origin, 3)}
            for e in sorted(events, key=lambda e: e["start"])]


def phases(events: list[dict], started: float, ended: float) -> dict[str, float]:
    """Seconds per phase: the sum of its events' spans (the actor's: the first actor's)."""
    spans: dict[str, float] = {}
    firsts: dict[str, dict] = {}
    for e in sorted(events, key=lambda e: e["start"]):
        if e["name"].startswith("actor"):
            firsts.setdefault(e["name"], e)
            continue
        spans[e["name"]] = spans.get(e["name"], 0.0) + e["end"] - e["start"]
    for name, e in firsts.items():
        spans[name] = e["end"] - e["start"]
    main = next((e for e in events if e["name"] == "cli_main"), None)
    if main:
        spans["exit_after_main"] = ended - main["end"]
    first = next((e for e in events if e["name"] == "interpreter_to_first_line"), None)
    if first:
        spans["interpreter_to_first_line"] = first["end"] - started
    return {k: round(v, 3) for k, v in spans.items()}


def summary(runs: list[dict]) -> dict:
    out = {}
    for mode in sorted({r["mode"] for r in runs}):
        mine = [r for r in runs if r["mode"] == mode]
        names = sorted({k for r in mine for k in r["phases"]})
        out[mode] = {"runs": len(mine), "wall_s_median": round(statistics.median(r["wall_s"] for r in mine), 3),
                     "wall_s": [r["wall_s"] for r in mine],
                     "phases_median": {n: round(statistics.median(r["phases"].get(n, 0.0) for r in mine), 3)
                                       for n in names}}
    return out


def make_inputs(work: Path, count: int) -> tuple[Path, Path]:
    import ghostnet
    from bench.peers import make_photos

    images = make_photos(work / f"in-{count}", count)
    weights = work / f"{MODEL}.safetensors"
    model = ghostnet.create_model(MODEL)
    ghostnet.init_random(model, 0)
    ghostnet.save_weights(model, weights)
    return images, weights


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["local", "address"])
    parser.add_argument("--baseline-root", type=Path, default=None, help="the checkout that mode baseline runs")
    parser.add_argument("--run-args", default="", help="more `run` flags for every run, e.g. '--engine onnx'")
    parser.add_argument("--label", default="", help="what this results file measures (written into it)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "startup.json")
    args = parser.parse_args()

    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    work = Path(tempfile.mkdtemp(prefix="gnstart-", dir="/tmp"))
    uptime_start = Path("/proc/loadavg").read_text().strip()
    runs: list[dict] = []
    failed: list[dict] = []
    ray_running = None

    def report_now() -> dict:
        """The results file, rewritten after every run, so that a benchmark cut short keeps what ran."""
        report = {
            "benchmark": f"fixed cost of a {args.images}-image `ghostnet-pipeline run`, fresh process per run",
            "label": args.label,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": {"cpu": _cpu_name(), "logical_cpus": os.cpu_count(), "platform": platform.platform()},
            "python": platform.python_version(),
            "loadavg_start": uptime_start,
            "loadavg_end": Path("/proc/loadavg").read_text().strip(),
            "model": MODEL, "images": args.images, "run_args": args.run_args,
            "baseline_root": str(args.baseline_root) if args.baseline_root else None,
            "baseline_commit": _commit(args.baseline_root) if args.baseline_root else None, "commit": _commit(ROOT),
            "summary": summary(runs),
            "failed_runs": failed,
            "runs": runs,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        return report

    try:
        images, weights = make_inputs(work, args.images)
        # One uncounted run first: the page cache then holds the interpreter, torch and Ray for all alike.
        one_run("local", images, weights, work, env, args.run_args.split(), None)
        for repeat in range(args.repeats):
            for mode in args.modes:
                try:
                    if mode == "address" and (ray_running is None or not ray_running.alive()):
                        if ray_running:
                            ray_running.stop()
                        ray_running = None
                        ray_running = RunningRay(work, env)
                    row = one_run(mode, images, weights, work, env, args.run_args.split(),
                                  ray_running if mode == "address" else None,
                                  args.baseline_root if mode == "baseline" else ROOT)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    failed.append({"mode": mode, "repeat": repeat, "error": str(exc)[-1500:],
                                   "load_avg_1min": os.getloadavg()[0]})
                    print(f"{mode} #{repeat}: failed: {str(exc)[-300:]}", flush=True)
                    report_now()
                    continue
                runs.append(row)
                print(f"{mode} #{repeat}: {row['wall_s']:.2f} s wall  {json.dumps(row['phases'])}", flush=True)
                report_now()
    finally:
        if ray_running:
            ray_running.stop()
        shutil.rmtree(work, ignore_errors=True)
    report = report_now()
    print(json.dumps(report["summary"], indent=2))
    print(f"wrote {args.out}")


def _commit(root: Path) -> str:
    done = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip()


def _cpu_name() -> str:
    from bench.model_cpu import cpu_name

    return cpu_name()


if __name__ == "__main__":
    main()
