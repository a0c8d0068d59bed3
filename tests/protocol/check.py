"""Run the schedule checker from the command line, and replay what it finds.

    python -m tests.protocol.check --seeds 0:2000 [--workers 2]     # many schedules, a summary
    python -m tests.protocol.check --seed 1234 --verbose             # one, with its trace
    python -m tests.protocol.check --schedule '<json>' --verbose     # a shrunk one, as printed
    python -m tests.protocol.check --seeds 0:200 --shrink --json out.json

A failing schedule is printed with the command that replays it and, with ``--shrink``, the smallest
schedule found that still fails.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import multiprocessing
import os
import sys
import time
from collections import Counter

from tests.protocol.schedules import Result, Schedule, run_schedule, shrink


def run_seeds(seeds: range, workers: int = 1, under_test: str = "tests.protocol.world") -> list[Result]:
    """Run the schedules of ``seeds`` against the implementation module ``under_test``, over
    ``workers`` processes."""
    jobs = [(seed, under_test) for seed in seeds]
    if workers <= 1:
        return [_one(job) for job in jobs]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return pool.map(_one, jobs, chunksize=max(1, len(jobs) // (workers * 8)))


def _one(job: tuple[int, str]) -> Result:
    seed, under_test = job
    quiet()
    return run_schedule(Schedule.generate(seed), under_test=importlib.import_module(under_test))


def quiet() -> None:
    """The pipeline logs what it clears and why a run stopped; thousands of schedules say it all the time."""
    logging.getLogger("ghostnet_pipeline").setLevel(logging.CRITICAL)


def summary(results: list[Result], seconds: float) -> dict:
    endings: Counter[str] = Counter()
    for result in results:
        endings.update(result.endings)
    failed = [r for r in results if not r.ok]
    return {
        "schedules": len(results),
        "failed": len(failed),
        "failed_seeds": [r.schedule.seed for r in failed][:50],
        "seconds": round(seconds, 1),
        "actors": sum(len(r.outcomes) for r in results),
        "steps": sum(r.steps for r in results),
        "storage_faults_injected": sum(r.faults for r in results),
        "crashes": sum(r.crashes for r in results),
        "clock_skews_s": [-3600, 3600],
        "actor_endings": dict(sorted(endings.items())),
    }


def describe(result: Result, *, verbose: bool = False) -> str:
    lines = [f"schedule {result.schedule.seed}: {'ok' if result.ok else 'FAILED'}"]
    lines += [f"  violation: {v}" for v in result.violations]
    lines += [f"  {name}: {outcome}" for name, outcome in result.outcomes.items()]
    if not result.ok:
        lines.append(f"  replay: python -m tests.protocol.check --schedule '{result.schedule.to_json()}' --verbose")
    if verbose:
        lines.append("  trace: " + " ".join(result.trace))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", help="a range of seeds, START:STOP")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--schedule", help="a schedule's JSON, as a failure prints it")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--shrink", action="store_true", help="shrink each failing schedule")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--json", help="write the summary and the failures here")
    args = parser.parse_args(argv)
    if not args.verbose:
        quiet()
    started = time.monotonic()
    if args.schedule:
        results = [run_schedule(Schedule.from_json(args.schedule))]
    elif args.seed is not None:
        results = [run_schedule(Schedule.generate(args.seed))]
    else:
        start, stop = (int(x) for x in (args.seeds or "0:100").split(":"))
        results = run_seeds(range(start, stop), args.workers)
    seconds = time.monotonic() - started
    failures = [shrink(r) if args.shrink else r for r in results if not r.ok]
    for result in (results if len(results) == 1 else failures):
        print(describe(result, verbose=args.verbose))
    report = summary(results, seconds)
    print(json.dumps(report, indent=2))
    if args.json:
        report["failures"] = [{"seed": f.schedule.seed, "schedule": json.loads(f.schedule.to_json()),
                               "violations": f.violations, "outcomes": f.outcomes, "trace": f.trace}
                              for f in failures]
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
