"""The output layout and its commit protocol.

Workers write only under ``OUTPUT/_staging/<run_id>/``. When every item is accounted for,
the driver publishes:

1. reduce the channel partial sums into one ``channel_stats`` file (still in staging);
2. write ``_staging/<run_id>/_publish.json``, the list of renames about to happen;
3. rename each staged file into ``predictions/run_date=D/`` and ``channel_stats/run_date=D/``;
4. write ``_runs/<run_id>.json``, the commit record; then delete the staging folder.

A run is committed when its record exists. A driver killed before step 2 leaves nothing
visible; one killed during step 3 leaves an intent that :func:`recover` (run at the start of
every run on the same output) rolls forward, so no published row is ever orphaned. Prediction
files move last, so a run whose rows fit in one file (``--rows-per-file``, default 100,000)
becomes visible in ``predictions/`` with one rename; a larger run can be seen partly published
for the moments its renames take if its driver dies among them, until the next run finishes it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.schema import CHANNEL_STATS, PARTITION, PREDICTIONS

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class CommitError(RuntimeError):
    """The staged output does not account for every item exactly once; nothing was committed."""


def validate_run_id(run_id: str) -> str:
    if not RUN_ID.match(run_id) or ".." in run_id:
        raise ValueError(
            f"run id {run_id!r} is not allowed: use letters, digits, '_', '.' and '-' "
            "(at most 128, starting with a letter or digit)"
        )
    return run_id


def validate_run_date(value: str) -> str:
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise ValueError(f"run date {value!r} is not a date: use YYYY-MM-DD") from None


@dataclass(frozen=True)
class Layout:
    """Where everything of one output lives."""

    root: str

    def predictions(self, run_date: str | None = None) -> str:
        base = storage.join(self.root, "predictions")
        return storage.join(base, f"{PARTITION}={run_date}") if run_date else base

    def channel_stats(self, run_date: str | None = None) -> str:
        base = storage.join(self.root, "channel_stats")
        return storage.join(base, f"{PARTITION}={run_date}") if run_date else base

    @property
    def runs(self) -> str:
        return storage.join(self.root, "_runs")

    def run_record(self, run_id: str) -> str:
        return storage.join(self.runs, f"{run_id}.json")

    def staging(self, run_id: str | None = None) -> str:
        base = storage.join(self.root, "_staging")
        return storage.join(base, run_id) if run_id else base

    def staged_predictions(self, run_id: str) -> str:
        return storage.join(self.staging(run_id), "predictions")

    def staged_partials(self, run_id: str) -> str:
        return storage.join(self.staging(run_id), "channel_partials")

    def intent(self, run_id: str) -> str:
        return storage.join(self.staging(run_id), "_publish.json")


def committed_runs(layout: Layout) -> list[dict]:
    """Every commit record of this output, oldest first."""
    records = [json.loads(storage.read_bytes(u)) for u in storage.list_files(layout.runs, ".json")]
    return sorted(records, key=lambda r: (r.get("committed_at", ""), r["run_id"]))


def read_staged(layout: Layout, run_id: str, columns: list[str]) -> pa.Table:
    files = storage.list_files(layout.staged_predictions(run_id), ".parquet")
    if not files:
        return PREDICTIONS.empty_table().select(columns)
    fs, _ = storage.filesystem(files[0])
    paths = [storage.filesystem(f)[1] for f in files]
    return pads.dataset(paths, filesystem=fs, format="parquet", schema=PREDICTIONS).to_table(columns=columns)


def check_exactly_once(staged: pa.Table, items: pa.Table) -> None:
    """Every item has rows, each (uri, segment) appears once, and nothing else appears."""
    keys = pa.table({"uri": staged["uri"], "segment": staged["segment"]})
    distinct = keys.group_by(["uri", "segment"]).aggregate([([], "count_all")])
    if distinct.num_rows != staged.num_rows:
        dupes = distinct.filter(pc.greater(distinct["count_all"], 1))
        raise CommitError(
            f"{staged.num_rows - distinct.num_rows} duplicate rows staged "
            f"(e.g. {dupes['uri'][0].as_py()!r}); nothing was committed"
        )
    staged_uris = distinct.select(["uri"]).group_by("uri").aggregate([])
    wanted = items.select(["uri"])
    missing = wanted.join(staged_uris, "uri", join_type="left anti")
    extra = staged_uris.join(wanted, "uri", join_type="left anti")
    if missing.num_rows or extra.num_rows:
        sample = pc.min((missing if missing.num_rows else extra)["uri"]).as_py()
        raise CommitError(
            f"staged rows do not match the inputs: {missing.num_rows} items without a row, "
            f"{extra.num_rows} unexpected (e.g. {sample!r}); nothing was committed"
        )


def reduce_partials(layout: Layout, run_id: str, *, model: str, weights_sha256: str) -> pa.Table:
    """Sum the per-batch partials into per-(layer, channel) statistics."""
    files = storage.list_files(layout.staged_partials(run_id), ".parquet")
    if not files:
        return CHANNEL_STATS.empty_table()
    fs, _ = storage.filesystem(files[0])
    table = pads.dataset([storage.filesystem(f)[1] for f in files], filesystem=fs).to_table()
    agg = table.group_by(["layer", "channel"]).aggregate(
        [("count", "sum"), ("sum", "sum"), ("sum_sq", "sum"), ("min", "min"), ("max", "max")]
    )
    count = agg["count_sum"]
    mean = pc.divide(agg["sum_sum"], pc.cast(count, pa.float64()))
    var = pc.subtract(pc.divide(agg["sum_sq_sum"], pc.cast(count, pa.float64())), pc.multiply(mean, mean))
    std = pc.sqrt(pc.max_element_wise(var, pa.scalar(0.0)))
    n = agg.num_rows
    out = pa.table(
        {
            "run_id": [run_id] * n,
            "model": [model] * n,
            "weights_sha256": [weights_sha256] * n,
            "layer": agg["layer"],
            "channel": agg["channel"],
            "count": count,
            "mean": mean,
            "std": std,
            "min": agg["min_min"],
            "max": agg["max_max"],
        },
        schema=CHANNEL_STATS,
    )
    return out.sort_by([("layer", "ascending"), ("channel", "ascending")])


def publish(layout: Layout, run_id: str, run_date: str, channel_stats: pa.Table, record: dict) -> dict:
    """Steps 1-4 of the protocol; returns the commit record as written."""
    stats_uri = storage.join(layout.staging(run_id), "channel_stats.parquet")
    _write_table(stats_uri, channel_stats)
    stats_move = (stats_uri, storage.join(layout.channel_stats(run_date), f"{run_id}-00000.parquet"))
    staged = storage.list_files(layout.staged_predictions(run_id), ".parquet")
    prediction_moves = [
        (src, storage.join(layout.predictions(run_date), f"{run_id}-{n:05d}.parquet")) for n, src in enumerate(staged)
    ]
    # Predictions move last: a run that fits in one file (up to --rows-per-file rows) appears
    # in predictions/ with a single rename.
    moves = [stats_move, *prediction_moves]
    record = {
        **record,
        "files": {
            "predictions": [dst for _, dst in prediction_moves],
            "channel_stats": [stats_move[1]],
        },
    }
    intent = {"run_id": run_id, "moves": moves, "record": record}
    storage.write_bytes(layout.intent(run_id), json.dumps(intent).encode())
    _roll_forward(layout, intent)
    return record


def recover(layout: Layout) -> list[str]:
    """Finish any publish a killed driver left half done; returns the run ids it committed."""
    finished = []
    for intent_uri in storage.list_files(layout.staging(), "_publish.json"):
        intent = json.loads(storage.read_bytes(intent_uri))
        _roll_forward(layout, intent)
        finished.append(intent["run_id"])
    return finished


def _roll_forward(layout: Layout, intent: dict) -> None:
    for src, dst in intent["moves"]:
        _move(src, dst)
    record = intent["record"]
    storage.write_bytes(layout.run_record(intent["run_id"]), json.dumps(record, indent=2).encode())
    storage.remove_tree(layout.staging(intent["run_id"]))


def _move(src: str, dst: str) -> None:
    fs, src_path = storage.filesystem(src)
    _, dst_path = storage.filesystem(dst)
    if not storage.with_retries(lambda: fs.exists(src_path)):
        return  # moved before the driver died
    if storage.is_local(fs):
        fs.makedirs(dst_path.rsplit("/", 1)[0], exist_ok=True)
    storage.with_retries(lambda: fs.mv(src_path, dst_path))


def _write_table(uri: str, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    storage.write_bytes(uri, sink.getvalue().to_pybytes())
