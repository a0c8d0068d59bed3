"""A process that reads Delta tables through deltalake's default filesystem can abort at exit after
its work is done: "terminate called without an active exception", exit 134 (SIGABRT).

Cause (from a core dump, pyarrow 26.0.1, deltalake 1.6.6, CPython 3.11): ``to_pyarrow_dataset()``
reads through a Python handler (pyarrow's PyFileSystem over deltalake's DeltaStorageHandler), so
the pre-buffered byte ranges are ``arrow::py::PyBuffer`` objects. The scan's last references are
dropped on an Arrow thread-pool thread; when that happens while ``Py_FinalizeEx`` runs,
``~PyBuffer`` calls ``PyGILState_Ensure``, CPython ends the thread with ``pthread_exit``, and the
forced unwind through the noexcept destructor calls ``std::terminate``. apache/arrow#49942 (fixed
by apache/arrow#49943, in pyarrow 26) checks ``Py_IsInitialized()`` first, but without the GIL: a
thread that passed the check still waits for the GIL while the main thread starts finalizing, and
is ended there (the core dump's stack: ``~PyBuffer`` -> ``PyGILState_Ensure`` -> ``take_gil`` ->
``PyThread_exit_thread``). The abort remains.

Reading with pyarrow's own filesystem (``to_pyarrow_dataset(filesystem=...)``, as
``pipeline.storage.arrow_filesystem`` does) holds no Python objects in Arrow's threads; this
script runs both ways side by side in fresh processes and counts the exit codes.

    python tools/repro_arrow_exit_abort.py --runs 30
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import subprocess
import sys
import tempfile

MODES = ("deltalake-default", "pyarrow-filesystem")


def child(mode: str) -> None:
    import pyarrow as pa
    import pyarrow.fs as pafs
    from deltalake import DeltaTable, write_deltalake

    root = tempfile.mkdtemp(prefix="arrow-exit-")
    days = [datetime.date(2026, 1, 1 + j % 3) for j in range(10)]
    batch = pa.table({"a": list(range(10)), "b": [f"x{j}" for j in range(10)], "run_date": days})
    for i in range(20):
        uri = f"{root}/t{i}"
        write_deltalake(uri, batch, partition_by=["run_date"])
        write_deltalake(uri, batch, mode="append", partition_by=["run_date"])
        files = pafs.SubTreeFileSystem(uri, pafs.LocalFileSystem()) if mode == "pyarrow-filesystem" else None
        assert DeltaTable(uri).to_pyarrow_table(filesystem=files).num_rows == 20
    print("read 20 tables", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="fresh processes per mode (default 30)")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0
    codes: dict[str, collections.Counter] = {mode: collections.Counter() for mode in MODES}
    for _ in range(args.runs):
        for mode in MODES:  # interleaved, so both ways see the same load
            done = subprocess.run([sys.executable, __file__, "--child", mode], capture_output=True, text=True)
            worked = done.stdout.strip() == "read 20 tables"
            codes[mode][f"{done.returncode}{'' if worked else ' (work not done)'}"] += 1
    import deltalake
    import pyarrow

    print(json.dumps({
        "pyarrow": pyarrow.__version__, "deltalake": deltalake.__version__, "python": sys.version.split()[0],
        "runs_per_mode": args.runs, "load_avg_1min_end": round(os.getloadavg()[0], 1),
        "exit_codes": {mode: dict(counter) for mode, counter in codes.items()},
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
