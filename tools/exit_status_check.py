"""A scheduler reads our exit codes: does any subcommand exit non-zero after it has done its work?

Labels a small folder twice (six shards each, two run dates, so the tables hold several files in
several partitions), then runs ``query``, ``report`` and ``run --reprocess`` again and again, each
in a fresh process as a scheduler would, and counts the exit codes of those that finished their work (the
expected output printed or written). Any code but 0 among them is a process that succeeded and
then failed on the way out.

    python tools/exit_status_check.py --runs 30 --run-runs 5
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MODEL = ["--model", "ghostnet_050", "--weights", "random", "--num-classes", "4"]


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


def label(images: Path, output: Path, run_date: str, env: dict[str, str], *more: str) -> subprocess.CompletedProcess:
    return cli("run", "--input", str(images), "--output", str(output), *MODEL, "--shard-size", "2",
               "--run-date", run_date, *more, env=env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="fresh processes of query and of report (default 30)")
    parser.add_argument("--run-runs", type=int, default=5, help="fresh processes of run (default 5; each starts a Ray)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ec-", dir="/tmp"))  # short: Ray's socket paths sit below it
    env = {**os.environ, "TMPDIR": str(work), "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1",
           "RAY_USAGE_STATS_ENABLED": "0"}
    images, output = work / "in", work / "out"
    images.mkdir()
    for i in range(12):
        Image.new("RGB", (40 + 3 * i, 36), color=(20 * i, 200 - 15 * i, 90)).save(images / f"img_{i:02d}.png")
    for run_date in ("2026-11-27", "2026-11-28"):
        first = label(images, output, run_date, env, "--reprocess")
        if first.returncode != 0:
            print(first.stderr[-3000:], file=sys.stderr)
            return 1

    def query() -> tuple[int, bool]:
        done = cli("query", str(output), "SELECT run_date, count(*) FROM predictions GROUP BY 1 ORDER BY 1", env=env)
        return done.returncode, done.stdout.endswith("(2 rows)\n")

    def report() -> tuple[int, bool]:
        page = work / "report.html"
        page.unlink(missing_ok=True)
        done = cli("report", str(output), "--out", str(page), env=env)
        return done.returncode, page.is_file() and page.read_text().rstrip().endswith("</html>")

    def run_again() -> tuple[int, bool]:
        done = label(images, output, "2026-11-28", env, "--reprocess")
        return done.returncode, done.stdout.startswith("committed run ")

    counts: dict[str, collections.Counter] = {}
    for name, command, times in (("query", query, args.runs), ("report", report, args.runs),
                                 ("run", run_again, args.run_runs)):
        counts[name] = collections.Counter()
        for _ in range(times):
            code, worked = command()
            counts[name][f"{code}{'' if worked else ' (work not done)'}"] += 1

    import deltalake
    import pyarrow

    print(json.dumps({
        "pyarrow": pyarrow.__version__, "deltalake": deltalake.__version__, "python": sys.version.split()[0],
        "load_avg_1min_end": round(os.getloadavg()[0], 1), "exit_codes": {k: dict(v) for k, v in counts.items()},
    }, indent=2))
    failed_after_work = sum(n for c in counts.values() for key, n in c.items() if key.split()[0] != "0"
                            and "work not done" not in key)
    return 1 if failed_after_work else 0


if __name__ == "__main__":
    sys.exit(main())
