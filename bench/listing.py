"""Listing throughput: our streamed listing against fsspec's ``find`` on the same data in the same run,
on a folder tree on local disk and on a prefix of moto's S3 server, each 2M objects by default.

Both trees hold ``photos/<year>/<month>/<day>/IMG_<n>.jpg`` over two years (672 day folders). Each
measurement runs in a fresh process, so its peak RSS is its own:

- ours: ``pipeline.discover.list_inputs([root])``, the listing exactly as ``run`` spills it into
  the plan (Arrow batches of uri, etag, size_bytes), batches counted and dropped;
- fsspec: ``fs.find(root, detail=True)``, the usual one-liner, which returns every object's info.

The S3 side is moto's real server (HTTP, auth, XML) in its own process. Its stock listing scans
and sorts the whole bucket for every page of 1,000 keys, which makes 2M keys take hours whoever
lists them; the server here answers ListObjectsV2 from a sorted index of the bucket's key names
instead (same responses, built per page). Objects exist only as names in that index, so nothing
but listings can be asked of them.

    python bench/listing.py [--objects 2000000] [--rounds 1]
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "bench-listing"
DAYS = [(year, month, day) for year in (2025, 2026) for month in range(1, 13) for day in range(1, 29)]


def key_names(n: int) -> list[str]:
    """``n`` object names spread over the day folders, sorted as S3 lists them."""
    return sorted(f"photos/{y}/{m:02d}/{d:02d}/IMG_{i:08d}.jpg" for i in range(n)
                  for y, m, d in [DAYS[i % len(DAYS)]])


def make_tree(folder: Path, n: int) -> None:
    for y, m, d in DAYS:
        (folder / f"photos/{y}/{m:02d}/{d:02d}").mkdir(parents=True, exist_ok=True)
    for name in key_names(n):
        os.close(os.open(folder / name, os.O_CREAT | os.O_WRONLY, 0o644))


# --- the S3 server: moto, answering listings from a sorted index -----------------------------------


def serve(n: int, port: int) -> None:
    import logging

    import boto3
    from moto.s3 import models
    from moto.server import ThreadedMotoServer

    names = key_names(n)

    class Listed(models.FakeKey):
        """A key known by name only: what a listing page shows of it."""

        __module__ = "moto.s3.listing_index"  # moto's model registry files classes by their module

        def __init__(self, name: str) -> None:
            self.name = name
            self.checksum_algorithm = None

        etag = property(lambda self: f'"{abs(hash(self.name)):032x}"')
        size = property(lambda self: 1000 + len(self.name))
        storage_class = property(lambda self: "STANDARD")
        last_modified_ISO8601 = property(lambda self: "2026-11-30T00:00:00.000Z")

        def safe_name(self, encoding_type: str | None = None) -> str:
            return self.name

    stock = models.S3Backend.list_objects_v2

    def indexed(self, bucket, prefix, delimiter, continuation_token, start_after, max_keys):
        if bucket.name != BUCKET:
            return stock(self, bucket, prefix, delimiter, continuation_token, start_after, max_keys)
        prefix = prefix or ""
        at = int(continuation_token) if continuation_token else bisect.bisect_right(names, start_after or "")
        at, page = max(at, bisect.bisect_left(names, prefix)), []
        while len(page) < max_keys and at < len(names) and names[at].startswith(prefix):
            rest = names[at][len(prefix):]
            if delimiter and delimiter in rest:
                folder = prefix + rest[: rest.index(delimiter) + 1]
                page.append(folder)
                at = bisect.bisect_left(names, folder[:-1] + chr(ord(delimiter) + 1))
            else:
                page.append(Listed(names[at]))
                at += 1
        more = at < len(names) and names[at].startswith(prefix)
        return page, more, str(at) if more else None

    models.S3Backend.list_objects_v2 = indexed
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket=BUCKET)
    print("ready", flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    server.stop()


def start_server(n: int, env: dict) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(n), str(port)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    if server.stdout.readline().strip() != "ready":
        raise RuntimeError("the S3 server did not start")
    return server, f"http://127.0.0.1:{port}"


# --- one measurement, in its own process -------------------------------------------------------------


def measure(who: str, root: str) -> dict:
    sys.path.insert(0, str(ROOT))
    import fsspec

    from pipeline import discover

    started = time.perf_counter()  # after the imports: they are not the listing's cost
    if who == "ours":
        objects = sum(batch.num_rows for batch in discover.list_inputs([root]))
    else:
        fs, path = fsspec.core.url_to_fs(root)
        objects = len(fs.find(path, detail=True))
    seconds = time.perf_counter() - started
    return {"objects": objects, "seconds": round(seconds, 2), "objects_per_s": round(objects / seconds),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def run_one(who: str, root: str, env: dict) -> dict:
    done = subprocess.run([sys.executable, __file__, "--one", who, root], capture_output=True, text=True,
                          env=env, check=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "listing.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-listing-"))
    server = None
    try:
        started = time.perf_counter()
        make_tree(work, args.objects)
        print(f"tree of {args.objects:,} files made in {time.perf_counter() - started:.0f} s", flush=True)
        s3_env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                  "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
        server, endpoint = start_server(args.objects, s3_env)
        s3_env["AWS_ENDPOINT_URL"] = endpoint
        targets = {"local folder tree": (str(work / "photos"), os.environ),
                   "moto S3 prefix": (f"s3://{BUCKET}/photos", s3_env)}
        runs: dict[str, dict[str, list[dict]]] = {t: {"ours": [], "fsspec_find": []} for t in targets}
        for round_ in range(args.rounds):
            for target, (root, env) in targets.items():
                # Alternate who goes first, so a drift in the machine's load falls on both alike.
                for who in (("ours", "fsspec_find") if round_ % 2 == 0 else ("fsspec_find", "ours")):
                    runs[target][who].append(run_one(who, root, env))
                    print(json.dumps({"target": target, "who": who, **runs[target][who][-1]}), flush=True)
        results = []
        for target, by_who in runs.items():
            ours, find = (statistics.median(r["seconds"] for r in by_who[w]) for w in ("ours", "fsspec_find"))
            counts = {r["objects"] for rs in by_who.values() for r in rs}
            if counts != {args.objects}:
                raise RuntimeError(f"{target}: listed {counts}, expected {args.objects}")
            results.append({"target": target, "objects": args.objects, "runs": by_who,
                            "ours_s": ours, "fsspec_find_s": find, "throughput_ratio": round(find / ours, 2)})
        summary = {
            "what": "streamed listing (pipeline.discover.list_inputs) vs fsspec find(detail=True), same data, same run",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "load_average_1m": os.getloadavg()[0],
            "rounds": args.rounds, "results": results,
        }
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
        for r in results:
            print(f"{r['target']}: ours {r['ours_s']} s, fsspec find {r['fsspec_find_s']} s, "
                  f"ratio {r['throughput_ratio']}x", flush=True)
    finally:
        if server is not None:
            server.stdin.close()
            server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1:2] == ["--one"]:
        print(json.dumps(measure(sys.argv[2], sys.argv[3])))
    else:
        main()
