"""Adopt an output written in the old layout (plain Parquet, one commit record per run listing its
files) into the Delta tables, without rewriting a data file.

1. A publish the old protocol left half done (``_staging/<run>/_publish.json``) is finished first.
2. Each committed run's files, as its record lists them, are added to the tables in one
   transaction per table and run, with the application id ``ghostnet-pipeline:migrate:<run>``:
   running migrate again adds nothing twice.
3. ``_staging/`` and ``_locks/`` go. Files no record lists are left alone and reported: the old
   protocol never published them.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from pipeline import record as records
from pipeline import storage, tables
from pipeline.delta import DeltaLog
from pipeline.errors import UsageError
from pipeline.schema import PARTITION
from pipeline.tables import FileStats, OutputLayout, file_stats

__all__ = ["Migration", "migrate"]

log = logging.getLogger("ghostnet_pipeline")

# The columns whose statistics let readers and the diff skip files.
_STATS_COLUMNS = ("uri", "etag", "size_bytes", "modality", "segment", "status", "model", "weights_sha256", "run_id")


@dataclass
class Migration:
    runs: list[str] = field(default_factory=list)  # runs whose files were added
    already: list[str] = field(default_factory=list)  # runs a previous migrate added
    files: int = 0
    rows: int = 0
    unlisted: list[str] = field(default_factory=list)  # data files no record lists (never published)


def migrate(output: str) -> Migration:
    layout = OutputLayout.of(output)
    if not storage.exists(layout.root):
        raise UsageError(f"output {storage.redact_uri(output)} does not exist")
    _finish_old_publishes(layout)
    found = [r for r in records.load_all(layout.runs) if r.committed]
    old = [(r, _old_files(layout, r.run_id)) for r in found]
    old = [(r, files) for r, files in old if files]
    if not old:
        raise UsageError(f"{storage.redact_uri(output)} holds no run of the old layout to migrate")
    done = Migration()
    listed: set[str] = set()
    for record, files in old:
        app = tables.app_id("migrate", record.run_id)
        added = False
        for name in ("predictions", "channel_stats"):
            relative = [_relative(uri) for uri in files.get(name, [])]
            listed |= {f"{name}/{r}" for r in relative}
            table = DeltaLog.open(layout.table(name), name, create=True)
            if table.app_version(app) is not None:
                continue
            described = [_describe(layout.table(name), r) for r in relative]
            table.commit(described, run_date=record.run_date, apps={app: 1},
                         metadata={"run_id": record.run_id, "ghostnet_pipeline": "migrate"})
            added = True
            done.files += len(described)
            if name == "predictions":
                done.rows += sum(f.rows for f in described)
        (done.runs if added else done.already).append(record.run_id)
    for name in ("predictions", "channel_stats"):
        present = {f"{name}/{p}" for p in storage.list_prefix(layout.table(name), f"{PARTITION}=")}
        done.unlisted += sorted(present - listed - _committed(layout, name))
    for folder in ("_staging", "_locks"):
        storage.remove_tree(storage.join(layout.root, folder))
    return done


def _old_files(layout: OutputLayout, run_id: str) -> dict[str, list[str]]:
    try:
        return json.loads(storage.read_bytes(storage.join(layout.runs, f"{run_id}.json"))).get("files") or {}
    except FileNotFoundError:
        return {}


def _relative(uri: str) -> str:
    """``.../predictions/run_date=D/<file>`` -> ``run_date=D/<file>`` (the output may have moved since)."""
    return "/".join(uri.rsplit("/", 2)[-2:])


def _describe(table_uri: str, relative: str) -> FileStats:
    fs, root = storage.filesystem(table_uri)
    path = storage.join(root, relative)
    with storage.with_retries(lambda: fs.open(path, "rb")) as f:
        parquet = pq.ParquetFile(f)
        columns = [c for c in _STATS_COLUMNS if c in parquet.schema_arrow.names]
        data = parquet.read(columns=columns) if columns else parquet.read()
    return FileStats(relative, int(storage.with_retries(lambda: fs.size(path))), data.num_rows, file_stats(data))


def _committed(layout: OutputLayout, name: str) -> set[str]:
    table = DeltaLog.open(layout.table(name), name)
    return set() if table is None else {f"{name}/{p}" for p in table.files()["path"].to_pylist()}


def _finish_old_publishes(layout: OutputLayout) -> None:
    """The old protocol's roll-forward: an intent lists renames, then the record to write."""
    for intent_uri in storage.list_files(storage.join(layout.root, "_staging"), "_publish.json"):
        intent = json.loads(storage.read_bytes(intent_uri))
        for src, dst in intent["moves"]:
            if storage.exists(src):
                fs, src_path = storage.filesystem(src)
                _, dst_path = storage.filesystem(dst)
                if storage.is_local(fs):
                    fs.makedirs(dst_path.rsplit("/", 1)[0], exist_ok=True)
                storage.with_retries(functools.partial(fs.mv, src_path, dst_path))
        storage.write_bytes(storage.join(layout.runs, f"{intent['run_id']}.json"),
                            json.dumps(intent["record"], indent=2).encode())
        log.warning("finished publishing run %s, which the old layout left half done", intent["run_id"])
