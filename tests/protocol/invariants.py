"""What must hold after any schedule, read from the output alone: the Delta logs (through deltalake,
as any reader), the files on storage, and the run records. Each check returns the violations it
found, as sentences; none is what the checker wants."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from tests.protocol.specs import arrow_files, open_delta

__all__ = ["Facts", "check_all"]


class Facts:
    """What the schedule knows besides the output: which run ids reprocess, and which commands
    ended saying "committed" with which items listed (they promised those items are labeled)."""

    def __init__(self) -> None:
        self.reprocess_runs: set[str] = set()
        self.promised: list[tuple[str, dict[str, str], list[str]]] = []  # (who, where, uris)


def check_all(root: str, facts: Facts, overwritten: Iterable[str]) -> list[str]:
    found = list(overwritten)
    fs, base = fsspec.core.url_to_fs(root)
    fs.invalidate_cache()
    tables = {name: open_delta(f"{root}/{name}") for name in ("predictions", "channel_stats")}
    for name, table in tables.items():
        if table is not None:
            found += files_exist(fs, f"{base}/{name}", table) + one_table_id(fs, f"{base}/{name}")
    readable, problems = read(tables)
    found += problems
    if readable is not None:
        predictions, stats = readable
        found += exactly_once(predictions, facts) + nothing_lost(predictions, facts)
        found += statistics_match(predictions, stats)
        found += records_agree(fs, f"{base}/_runs", predictions)
    return found


def files_exist(fs: fsspec.AbstractFileSystem, table_root: str, table: DeltaTable) -> list[str]:
    """Every file the log adds exists, with the size the log records."""
    actions = pa.table(table.get_add_actions(flatten=True))
    name = table_root.rsplit("/", 1)[-1]
    problems = []
    for path, size in zip(actions["path"].to_pylist(), actions["size_bytes"].to_pylist(), strict=True):
        try:
            found = fs.size(f"{table_root}/{path}")
        except FileNotFoundError:
            problems.append(f"{name}: the log adds {path}, which does not exist")
            continue
        if found != size:
            problems.append(f"{name}: {path} is {found} bytes, the log says {size}")
    return problems


def one_table_id(fs: fsspec.AbstractFileSystem, table_root: str) -> list[str]:
    """However many writers created the table at once, it has one id."""
    ids = set()
    for entry in sorted(fs.glob(f"{table_root}/_delta_log/*.json")):
        for line in fs.cat_file(entry).decode().splitlines():
            action = json.loads(line)
            if "metaData" in action:
                ids.add(action["metaData"]["id"])
    name = table_root.rsplit("/", 1)[-1]
    return [f"{name}: {len(ids)} table ids in the log: {sorted(ids)}"] if len(ids) > 1 else []


def read(tables: dict[str, DeltaTable | None]) -> tuple[tuple[pa.Table, pa.Table] | None, list[str]]:
    """Both tables as a reader gets them; a table no reader can read is a violation."""
    columns = {"predictions": ["uri", "model", "weights_sha256", "run_id", "status"],
               "channel_stats": ["run_id", "model", "weights_sha256", "layer", "channel", "count"]}
    read_back = {}
    for name, table in tables.items():
        if table is None:
            read_back[name] = pa.table({c: pa.array([], pa.string() if c != "count" and c != "channel" else pa.int64())
                                        for c in columns[name]})
            continue
        try:
            files = arrow_files(table.table_uri)
            read_back[name] = table.to_pyarrow_table(columns=columns[name], filesystem=files)
        except Exception as exc:  # noqa: BLE001 - whatever a reader trips on is the finding
            return None, [f"{name}: a reader fails: {type(exc).__name__}: {str(exc)[:200]}"]
    return (read_back["predictions"], read_back["channel_stats"]), []


def exactly_once(predictions: pa.Table, facts: Facts) -> list[str]:
    """Each item is committed once per (model, weights) by the runs that do not reprocess, and once
    per (run id, model, weights) by those that do: a run with several models has one row of each."""
    problems = []
    per_run = predictions.group_by(["uri", "run_id", "model", "weights_sha256"]).aggregate([([], "count_all")])
    twice = per_run.filter(pc.greater(per_run["count_all"], 1))
    if twice.num_rows:
        problems.append(f"{twice.num_rows} items have several rows of one run and model, "
                        f"e.g. {twice.slice(0, 1).to_pylist()}")
    fresh = predictions.filter(pc.invert(pc.is_in(predictions["run_id"], pa.array(sorted(facts.reprocess_runs),
                                                                                    pa.string()))))
    per_model = fresh.group_by(["uri", "model", "weights_sha256"]).aggregate([("run_id", "count_distinct")])
    again = per_model.filter(pc.greater(per_model["run_id_count_distinct"], 1))
    if again.num_rows:
        problems.append(f"{again.num_rows} items were labeled again by runs of the same model and weights "
                        f"that do not reprocess, e.g. {again.slice(0, 1).to_pylist()}")
    return problems


def nothing_lost(predictions: pa.Table, facts: Facts) -> list[str]:
    """A command that said "committed" left every item it listed labeled."""
    problems = []
    for who, where, uris in facts.promised:
        keep = pc.is_in(predictions["uri"], pa.array(uris, pa.string()))
        for column, value in where.items():
            keep = pc.and_(keep, pc.equal(predictions[column], value))
        labeled = set(predictions.filter(keep)["uri"].to_pylist())
        missing = sorted(set(uris) - labeled)
        if missing:
            problems.append(f"{who} said committed, but {len(missing)} of its items have no row ({missing[:2]}...)")
    return problems


def statistics_match(predictions: pa.Table, stats: pa.Table) -> list[str]:
    """Every run's channel statistics count exactly its ok rows, per model, layer and channel."""
    ok_rows = predictions.filter(pc.equal(predictions["status"], "ok"))
    who = ("run_id", "model", "weights_sha256")
    ok = Counter(zip(*(ok_rows[c].to_pylist() for c in who), strict=True))
    counted: dict[tuple[str, ...], set[int]] = {}
    if stats.num_rows:
        per = stats.group_by([*who, "layer", "channel"]).aggregate([("count", "sum")])
        for row in per.to_pylist():
            counted.setdefault(tuple(row[c] for c in who), set()).add(row["count_sum"])
    problems = []
    for key in sorted(set(ok) | set(counted)):
        if counted.get(key, {0}) != {ok.get(key, 0)}:
            problems.append(f"run {key[0]}, model {key[1]}@{key[2]}: the statistics count "
                            f"{sorted(counted.get(key, {0}))} items per channel, its ok rows are {ok.get(key, 0)}")
    return problems


def records_agree(fs: fsspec.AbstractFileSystem, runs: str, predictions: pa.Table) -> list[str]:
    """No run is left running, and each record's rows, items and shards are what the log holds."""
    problems = []
    names = sorted(fs.glob(f"{runs}/*.json"))
    for live in (n for n in names if n.endswith(".running.json")):
        problems.append(f"run {live.rsplit('/', 1)[-1].removesuffix('.running.json')} still has a live record "
                        "after recovery")
    rows = Counter(predictions["run_id"].to_pylist())
    items: dict[str, set[str]] = {}
    for uri, run_id in zip(predictions["uri"].to_pylist(), predictions["run_id"].to_pylist(), strict=True):
        items.setdefault(run_id, set()).add(uri)
    for path in names:
        if path.endswith(".running.json"):
            continue
        record = json.loads(fs.cat_file(path))
        run_id = record["run_id"]
        if record.get("rows", 0) != rows.get(run_id, 0) or record.get("items", 0) != len(items.get(run_id, ())):
            problems.append(f"run {run_id}: its record says {record.get('rows')} rows of {record.get('items')} "
                            f"items, the log holds {rows.get(run_id, 0)} rows of {len(items.get(run_id, ()))}")
        if record.get("pending"):
            problems.append(f"run {run_id}: its final record still lists pending shards")
        if record.get("shards_committed", 0) != len(record.get("shards") or []):
            problems.append(f"run {run_id}: its record counts {record.get('shards_committed')} shards and lists "
                            f"{len(record.get('shards') or [])}")
        problems += _models_agree(record, predictions)
    return problems


def _models_agree(record: dict, predictions: pa.Table) -> list[str]:
    """Each model of a run's record labeled the rows and items the log holds of that run and model."""
    problems = []
    for model in record.get("models") or []:
        mine = predictions.filter(pc.and_(pc.and_(pc.equal(predictions["run_id"], record["run_id"]),
                                                  pc.equal(predictions["model"], model["model"])),
                                          pc.equal(predictions["weights_sha256"], model["weights_sha256"])))
        items = len(set(mine["uri"].to_pylist()))
        if (model["rows"], model["items"]) != (mine.num_rows, items):
            problems.append(f"run {record['run_id']}, model {model['model']}@{model['weights_sha256']}: its record "
                            f"says {model['rows']} rows of {model['items']} items, the log holds {mine.num_rows} "
                            f"rows of {items}")
    return problems
