"""The run record: what a run did, readable while it runs and after it ends.

``OUTPUT/_runs/<run_id>.running.json`` while an attempt of the run goes (rewritten on every shard
commit and by a heartbeat), ``OUTPUT/_runs/<run_id>.json`` once it ended, committed or failed. A
live record that stopped being rewritten belongs to a run whose driver died; the next run on the
output fences it and finishes its bookkeeping (:mod:`pipeline.recovery`).

A record never claims more than the log holds: a shard is listed as committed only once its
commit is in the predictions log, and one about to be committed is listed as pending first, so
whoever finishes a dead run's record can ask the log which of them landed.

:class:`RunRecord` is the one contract for what a run reports: the CLI summary, the ``runs``
view and the report read it, nothing else. :class:`pipeline.runstate.RunState` is its only writer
while a run goes.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from pipeline import storage
from pipeline.errors import UsageError

__all__ = ["RUNNING", "ModelRecord", "RunRecord", "ShardRecord", "live_uri", "load", "load_all", "load_final",
           "load_live", "running", "validate_run_date", "validate_run_id", "write"]

RUNNING, COMMITTED, FAILED = "running", "committed", "failed"
# Where a run's time goes, in the order the data flows (pipeline.metrics reports them): seconds of
# work, summed over the processes doing it (and over a decode task's fetch threads), not wall time.
STAGES = ("listing", "plan", "fetch", "decode", "model", "write", "commit")
SCORE_BINS = 20  # the top-1 score histogram: equal bins over [0, 1]
BUSY_BOUND = 0.8  # model actors busy this share of the inference time or more: the run is model-bound
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_RUNNING_SUFFIX = ".running.json"


def validate_run_id(run_id: str) -> str:
    if not RUN_ID.match(run_id) or ".." in run_id:
        raise UsageError(
            f"run id {run_id!r} is not allowed: use letters, digits, '_', '.' and '-' "
            "(at most 128, starting with a letter or digit)"
        )
    return run_id


def validate_run_date(value: str) -> str:
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise UsageError(f"run date {value!r} is not a date: use YYYY-MM-DD") from None


def now(clock: float | None = None) -> str:
    """A record's timestamp: of ``clock`` (seconds since the epoch, a host's clock), else of now."""
    when = datetime.now(timezone.utc) if clock is None else datetime.fromtimestamp(clock, timezone.utc)
    return when.isoformat()


@dataclass
class ShardRecord:
    """One committed shard."""

    shard: int
    items: int
    rows: int
    rows_per_status: dict[str, int]
    files: int
    bytes: int
    written_s: float  # seconds from the start of inference to its last file
    commit_s: float  # seconds its commit took (checks, statistics, the transactions)
    committed_at: str
    digest: str = ""  # of its items: with the run and the shard, the id of its commit
    attempt: str = ""  # the attempt that committed it
    model_items: list[int] = field(default_factory=list)  # per model of the run: items it labeled in the shard
    model_rows: list[int] = field(default_factory=list)  # per model: its rows of the shard


@dataclass
class ModelRecord:
    """What one model of a run labeled (``RunRecord.models``, in the run's order)."""

    model: str
    weights: str  # the weights URI, credentials redacted, or "random"
    weights_sha256: str
    role: str | None = None  # production, candidate, or None
    labels: int = 0  # classes of its head
    items_skipped: int = 0  # already labeled by this model and weights when the run planned
    items: int = 0  # items it labeled: those of the committed shards planned for it
    rows: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)  # ok rows per top-1 label
    score_histogram: list[int] = field(default_factory=list)  # ok rows per top-1 score bin (SCORE_BINS)

    def add_labels(self, label_counts: dict[str, int], score_histogram: list[int]) -> None:
        for label, count in label_counts.items():
            self.label_counts[label] = self.label_counts.get(label, 0) + count
        self.label_counts = dict(sorted(self.label_counts.items()))
        mine = self.score_histogram or [0] * SCORE_BINS
        self.score_histogram = [a + b for a, b in zip(mine, score_histogram, strict=True)]


@dataclass
class RunRecord:
    """A run's record. ``model``, ``weights``, ``weights_sha256``, ``labels``, ``label_counts`` and
    ``score_histogram`` are its first model's; ``models`` holds every model's (one, unless the run
    labeled with several), and ``items``, ``rows`` and the shards are the run's, all models together."""

    run_id: str
    kind: str  # "run" or "nightly"
    run_date: str
    model: str
    weights: str  # the weights URI, credentials redacted, or "random"
    weights_sha256: str
    modality: str
    labels: int = 0  # classes of the model head
    inputs: list[str] = field(default_factory=list)
    status: str = RUNNING  # running, committed or failed
    error: str | None = None  # why it failed
    reprocess: bool = False
    items_listed: int = 0  # distinct items the inputs held
    duplicates: int = 0  # further copies of listed items, dropped
    not_items: dict[str, int] = field(default_factory=dict)  # objects that are not items, by extension
    items_skipped: int = 0  # already labeled by this model and weights
    items: int = 0  # items this run labeled: those of its committed shards
    items_to_label: int = 0  # items the run's latest plan had left to label when it was made
    shard_size: int = 0
    shards_total: int = 0  # shards with items to label
    shards_committed: int = 0
    shards: list[ShardRecord] = field(default_factory=list)
    pending: list[ShardRecord] = field(default_factory=list)  # being committed: the log says whether they landed
    conflicts: int = 0  # shards another run labeled first; their items were planned again
    rows: int = 0  # rows committed
    rows_per_status: dict[str, int] = field(default_factory=dict)
    top_errors: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    items_per_s: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)  # seconds of work per stage (STAGES)
    model_actors: int = 0
    model_busy: float | None = None  # share of the inference time the model actors spent running batches
    label_counts: dict[str, int] = field(default_factory=dict)  # ok rows per top-1 label
    score_histogram: list[int] = field(default_factory=list)  # ok rows per top-1 score bin (SCORE_BINS)
    tasks_per_node: dict[str, dict[str, int]] = field(default_factory=dict)
    models: list[ModelRecord] = field(default_factory=list)  # per model, in the run's order
    decode_groups: list[list[int]] = field(default_factory=list)  # the models (positions) sharing each decode
    config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    attempt: str = ""  # the attempt writing this record (pipeline.fencing.Attempt)
    host: str = ""
    pid: int = 0
    started_at: str = field(default_factory=now)
    updated_at: str = field(default_factory=now)
    finished_at: str | None = None

    @property
    def committed(self) -> bool:
        return self.status == COMMITTED

    @property
    def bound(self) -> str | None:
        """The stage that limited the run: ``model`` when the model actors were busy at least
        :data:`BUSY_BOUND` of the time, else the one of the others (fetch, decode, write, commit)
        with the most seconds of work, which kept the actors waiting. None without a breakdown."""
        if self.model_busy is None:
            return None
        if self.model_busy >= BUSY_BOUND:
            return "model"
        others = {s: self.stage_seconds.get(s, 0.0) for s in ("fetch", "decode", "write", "commit")}
        return max(others, key=lambda stage: others[stage]) if any(others.values()) else None

    def add_labels(self, labels: tuple[tuple[dict[str, int], list[int]], ...]) -> None:
        """Add a shard's ok rows per top-1 label and per score bin, of each model in order; the
        run's own fields follow its first model."""
        for model, (label_counts, score_histogram) in zip(self.models, labels, strict=False):
            if score_histogram:
                model.add_labels(label_counts, score_histogram)
        if self.models:
            self.label_counts = dict(self.models[0].label_counts)
            self.score_histogram = list(self.models[0].score_histogram)

    def add_shard(self, shard: ShardRecord) -> None:
        """Count a shard whose commit is in the log (once, however often it is reported)."""
        self.pending = [p for p in self.pending if (p.shard, p.digest) != (shard.shard, shard.digest)]
        if any((s.shard, s.digest) == (shard.shard, shard.digest) for s in self.shards):
            return
        self.shards.append(shard)
        self.shards_committed += 1
        self.items += shard.items
        self.rows += shard.rows
        for status, count in shard.rows_per_status.items():
            self.rows_per_status[status] = self.rows_per_status.get(status, 0) + count
        self.rows_per_status = dict(sorted(self.rows_per_status.items()))
        # A shard of a record from before several models is its one model's.
        for model, items, rows in zip(self.models, shard.model_items or [shard.items], shard.model_rows or [shard.rows],
                                      strict=False):
            model.items += items
            model.rows += rows

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """A record as written by any version: unknown keys are dropped, missing ones defaulted.
        Records of the old layout (one commit at the end) were committed when written."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["shards"] = [ShardRecord(**s) for s in data.get("shards") or []]
        values["pending"] = [ShardRecord(**s) for s in data.get("pending") or []]
        values["models"] = [ModelRecord(**m) for m in data.get("models") or []]
        values.setdefault("status", COMMITTED)
        for name in ("model", "weights", "weights_sha256", "modality", "kind", "run_date"):
            values.setdefault(name, "")
        return cls(**values)


def _path(runs: str, run_id: str, *, live: bool) -> str:
    return storage.join(runs, f"{run_id}{_RUNNING_SUFFIX if live else '.json'}")


def live_uri(runs: str, run_id: str) -> str:
    return _path(runs, run_id, live=True)


def write(runs: str, record: RunRecord, *, clock: float | None = None) -> None:
    """Save ``record``: as the live record while it runs, as the final one (the live one removed)
    after; ``clock`` is the writing host's time for ``updated_at``."""
    record.updated_at = now(clock)
    live = record.status == RUNNING
    storage.write_bytes(_path(runs, record.run_id, live=live), record.to_json().encode())
    if not live:
        storage.remove_file(_path(runs, record.run_id, live=True))


def load_final(runs: str, run_id: str) -> RunRecord | None:
    return _load(_path(runs, run_id, live=False))


def load_live(runs: str, run_id: str) -> RunRecord | None:
    return _load(_path(runs, run_id, live=True))


def load(runs: str, run_id: str) -> RunRecord | None:
    """The final record of ``run_id``, else its live one, else None."""
    return load_final(runs, run_id) or load_live(runs, run_id)


def _load(uri: str) -> RunRecord | None:
    try:
        return RunRecord.from_dict(json.loads(storage.read_bytes(uri)))
    except FileNotFoundError:
        return None


def load_all(runs: str, prefix: str = "") -> list[RunRecord]:
    """Every record under ``runs`` whose run id starts with ``prefix``, oldest first; a run with a
    final record is listed once."""
    names = storage.list_names(runs, prefix)
    final = {n.removesuffix(".json") for n in names if n.endswith(".json") and not n.endswith(_RUNNING_SUFFIX)}
    live = {n.removesuffix(_RUNNING_SUFFIX) for n in names if n.endswith(_RUNNING_SUFFIX)} - final
    records = [load(runs, run_id) for run_id in sorted(final | live)]
    return sorted((r for r in records if r), key=lambda r: (r.started_at, r.run_id))


def running(runs: str) -> list[RunRecord]:
    """The live records: runs going on now, or whose driver died."""
    names = storage.list_names(runs, "")
    ids = sorted(n.removesuffix(_RUNNING_SUFFIX) for n in names if n.endswith(_RUNNING_SUFFIX))
    found = (load_live(runs, run_id) for run_id in ids)
    return [r for r in found if r is not None]  # a run may end while we list
