"""Committing a run shard by shard, as the write stage reports the files it wrote.

A run labels with one model or several (:class:`RunIdentity`); each item of a shard is labeled by
the models its plan marks (the models that had not labeled it yet). A shard is complete when every
one of its (item, model) pairs has all its rows in files: the manifests say how many pairs finished
(their last row) and how many rows those pairs have in all. Then, for all its models at once:

1. its rows are checked, model by model: each item planned for that model, nothing else, each
   (uri, segment) once, every audio file's segments 0..n-1 with no gap; no row of another model;
2. its failure rate is checked against ``--max-error-rate``, model by model;
3. its channel statistics are added up per model, reconciled with that model's ``ok`` rows and
   written, all models' in one file;
4. it is listed as pending in the run's record, then its prediction files (every model's rows) are
   added to the predictions table in one transaction, then its statistics file to the
   channel_stats table in another.

Both transactions carry the shard's application id ``ghostnet-pipeline:<run>:<shard>:<digest>``
set to the attempt's version: a shard already committed (a retried call, a commit that landed but
reported a failure) is not committed twice, and anyone can tell which attempt committed it. The
predictions transaction also carries the run's id (:mod:`pipeline.fencing`): an attempt that was
fenced cannot commit. A run that does not reprocess also checks, just before committing, for each
of its models, that no other run of that model and weights labeled any of the shard's items planned
for it since the plan, and its transaction carries one more id per (model identity, hash partition)
of those items, so two runs committing the same items for the same model at once collide and the
loser checks again. A shard another run labeled first (for any of its models) is dropped (its files
deleted) and its items are planned again, model by model.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import channel_stats, failpoints, files, storage, tables
from pipeline.errors import InternalError, RunFailed
from pipeline.fencing import Attempt, Host, check_owner, run_app
from pipeline.model import ModelIdentity
from pipeline.plan import Plan, ShardPlan, read_shard, unlabeled
from pipeline.record import SCORE_BINS, ShardRecord, now
from pipeline.schema import MODELS, PREDICTIONS, Status
from pipeline.tables import ConcurrentCommit, FileStats, OutputLayout, Table, Tables

__all__ = ["CommitOutcome", "RunIdentity", "ShardCommitter", "check_model_errors", "check_rows",
           "commit_channel_stats", "commit_predictions", "partition_apps", "shard_app", "write_and_commit"]

log = logging.getLogger("ghostnet_pipeline")

COMMIT_ATTEMPTS = 20


@dataclass(frozen=True)
class RunIdentity:
    """Who writes: the run, its date, and the model identities its rows carry, in the run's order
    (a row's model is its position here, as the plan's model masks and the partials name it)."""

    run_id: str
    run_date: str
    models: tuple[ModelIdentity, ...]
    reprocess: bool

    @classmethod
    def single(cls, run_id: str, run_date: str, model: str, weights_sha256: str, *, reprocess: bool) -> RunIdentity:
        return cls(run_id, run_date, (ModelIdentity(model, weights_sha256),), reprocess)


class Journal(Protocol):
    """Where the committer reports a shard before its commit can land, and one it dropped."""

    def committing(self, shard: ShardRecord) -> None: ...

    def dropped(self, shard: int) -> None: ...


@dataclass
class _Pending:
    plan: ShardPlan
    files: list[dict[str, Any]] = field(default_factory=list)  # manifests (pipeline.sink.MANIFEST)
    rows: int = 0
    items_done: int = 0
    rows_expected: int = 0
    partials: list[pa.Table] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.items_done >= self.plan.pairs and self.rows >= self.rows_expected


@dataclass(frozen=True)
class CommitOutcome:
    shard: int
    committed: bool  # False: another run labeled some of its items first; they are planned again
    record: ShardRecord | None = None
    errors: tuple[tuple[str, str, int, str], ...] = ()  # (status, error, count, example uri)
    # Per model of the run: its ok rows per top-1 label, and per top-1 score bin.
    labels: tuple[tuple[dict[str, int], list[int]], ...] = ()


class ShardCommitter:
    """Takes manifests from the write stage; commits each shard once all its files are in."""

    def __init__(
        self,
        layout: OutputLayout,
        tables: Tables,
        plan: Plan,
        identity: RunIdentity,
        attempt: Attempt,
        *,
        journal: Journal,
        on_outcome: Callable[[CommitOutcome], None],
        max_error_rate: float,
        known_files: frozenset[str],
        started: float,
        host: Host,
    ) -> None:
        self.layout, self.tables, self.plan, self.identity, self.attempt = layout, tables, plan, identity, attempt
        self.journal, self.on_outcome = journal, on_outcome
        self.max_error_rate = max_error_rate
        self.known_files = known_files
        self.started, self.host = started, host
        self.pending = {s.index: _Pending(s) for s in plan.shards}
        self.written: dict[int, float] = {}

    def add(self, manifests: pa.Table) -> None:
        for manifest in manifests.to_pylist():
            pending = self.pending.get(manifest["shard"])
            if pending is None:
                raise InternalError(f"the write stage reported a file of shard {manifest['shard']}, "
                                    "which this run has no items for")
            pending.files.append(manifest)
            pending.rows += manifest["rows"]
            pending.items_done += manifest["items_done"]
            pending.rows_expected += manifest["rows_expected"]
            pending.partials.append(channel_stats.from_bytes(manifest["partials"]))
            if pending.complete:
                del self.pending[manifest["shard"]]
                self.written[pending.plan.index] = time.monotonic() - self.started
                self.on_outcome(self._commit(pending))

    def finish(self) -> None:
        """The stream ended: every shard must have been committed (or dropped for a conflict)."""
        if self.pending:
            shard = next(iter(self.pending.values()))
            raise InternalError(
                f"the run ended with {len(self.pending)} shards incomplete (shard {shard.plan.index}: "
                f"{shard.items_done} of {shard.plan.pairs} (item, model) pairs, {shard.rows} of "
                f"{shard.rows_expected} rows written); nothing of them was committed"
            )

    def _commit(self, pending: _Pending) -> CommitOutcome:
        started = time.monotonic()
        shard = pending.plan
        where = f"shard {shard.index} of run {self.identity.run_id}"
        rows = self._read_rows(pending)
        items = pa.concat_tables(read_shard(shard.path, max(1, shard.items)))
        per_model = self._rows_per_model(rows, items, where=where)
        total = channel_stats.add(pending.partials)
        for i, (model_rows, model_items) in enumerate(per_model):
            named = f"{where}, model {self.identity.models[i]}" if len(per_model) > 1 else where
            check_rows(model_rows, model_items["uri"], where=named)
            check_model_errors(model_rows, where=named)
            self._check_error_rate(model_rows, model_items.num_rows, shard, self.identity.models[i])
            ok_rows = int(pc.sum(pc.equal(model_rows["status"], Status.OK.value)).as_py() or 0)
            channel_stats.check_counts(channel_stats.of_model(total, i), ok_rows, where=named)
        stats_file = self._write_channel_stats(total, shard)
        prediction_files = [FileStats(f["path"], f["size"], f["rows"], f["stats"]) for f in pending.files]
        record = ShardRecord(
            shard=shard.index, items=shard.items, rows=rows.num_rows, rows_per_status=_count(rows["status"]),
            files=len(prediction_files), bytes=sum(f.size for f in prediction_files),
            written_s=round(self.written[shard.index], 3), commit_s=0.0, committed_at="",
            digest=shard.digest, attempt=self.attempt.token,
            model_items=[t.num_rows for _, t in per_model], model_rows=[r.num_rows for r, _ in per_model],
        )
        self.journal.committing(record)
        failpoints.hit("shard.before-commit")
        app = shard_app(self.identity.run_id, shard)
        if not self._commit_predictions(shard, app, prediction_files, [t for _, t in per_model]):
            self._delete([f.path for f in prediction_files], stats_file)
            self.journal.dropped(shard.index)
            return CommitOutcome(shard.index, committed=False)
        commit_channel_stats(self.tables.channel_stats, app, self.attempt.version, stats_file,
                             run_date=self.identity.run_date, run_id=self.identity.run_id, shard=shard.index)
        record.commit_s = round(time.monotonic() - started, 3)
        record.committed_at = now(self.host.clock())
        return CommitOutcome(shard.index, True, record, _errors(rows),
                             tuple(_labels(model_rows) for model_rows, _ in per_model))

    def _rows_per_model(self, rows: pa.Table, items: pa.Table, *, where: str) -> list[tuple[pa.Table, pa.Table]]:
        """Each model's rows of the shard and the shard's items planned for it; no row of a model the
        run does not have."""
        found = []
        mask = items[MODELS].to_numpy()
        for i, model in enumerate(self.identity.models):
            mine = pc.and_(pc.equal(rows["model"], model.model), pc.equal(rows["weights_sha256"], model.weights_sha256))
            found.append((rows.filter(mine), items.filter(pa.array(mask & (1 << i) != 0))))
        stray = rows.num_rows - sum(r.num_rows for r, _ in found)
        if stray:
            raise InternalError(f"{where}: {stray} rows carry a model and weights this run does not label with; "
                                "it was not committed")
        return found

    def _read_rows(self, pending: _Pending) -> pa.Table:
        table_uri = self.layout.table("predictions")
        columns = ("uri", "segment", "status", "error", "label", "score", "model", "weights_sha256")
        batches = list(tables.scan(table_uri, [f["path"] for f in pending.files], columns))
        if not batches:
            return pa.schema([PREDICTIONS.field(c) for c in columns]).empty_table()
        return pa.Table.from_batches(batches)

    def _check_error_rate(self, rows: pa.Table, items: int, shard: ShardPlan, model: ModelIdentity) -> None:
        failed = rows.filter(pc.not_equal(rows["status"], Status.OK.value)).group_by("uri").aggregate([])
        rate = failed.num_rows / max(1, items)
        if rate > self.max_error_rate:
            examples = "; ".join(f"{e[3]} ({e[0]}: {e[1]})" for e in _errors(rows)[:3])
            of_model = f" for model {model}" if len(self.identity.models) > 1 else ""
            raise RunFailed(
                f"{failed.num_rows} of the {items} items of shard {shard.index} failed{of_model} ({rate:.1%}), "
                f"over --max-error-rate {self.max_error_rate:.1%}; the shard was not committed "
                f"(shards committed before it stay). Examples: {examples}. Fix the inputs and run the same "
                "command again (it labels only what is not committed), or raise --max-error-rate if this is "
                "expected."
            )

    def _write_channel_stats(self, total: pa.Table, shard: ShardPlan) -> FileStats:
        identity = self.identity
        rows = channel_stats.shard_rows(total, run_id=identity.run_id, shard=shard.index, models=identity.models)
        return files.write_parquet(self.layout.table("channel_stats"), rows, run_id=identity.run_id,
                                   attempt=self.attempt.token, run_date=identity.run_date, shard=shard.index,
                                   digest=shard.digest)

    def _commit_predictions(self, shard: ShardPlan, app: str, prediction_files: list[FileStats],
                            items: list[pa.Table]) -> bool:
        """Add the shard's files to the predictions table; False if another run labeled some of its
        items first for the same model. ``items``: the shard's items of each model."""
        reprocess = self.identity.reprocess
        partitions = () if reprocess else partition_apps(self.identity.models, shard)
        return commit_predictions(
            self.tables.predictions, self.attempt, app, prediction_files, run_date=self.identity.run_date,
            shard=shard.index, partition_apps=partitions,
            labeled_meanwhile=None if reprocess else (lambda table: self._labeled_meanwhile(table, shard, items)),
        )

    def _labeled_meanwhile(self, table: Table, shard: ShardPlan, items: list[pa.Table]) -> bool:
        """Did another run of one of these models and weights commit any of the items planned for
        that model since the plan?"""
        files = table.files()
        for model, model_items in zip(self.identity.models, items, strict=True):
            if model_items.num_rows == 0:
                continue
            where = {"model": model.model, "weights_sha256": model.weights_sha256}
            candidates = tables.files_overlapping(tables.files_holding(files, **where), shard.uri_min, shard.uri_max)
            paths = [p for p in candidates["path"].to_pylist() if p not in self.known_files and not self._ours(p)]
            for batch in tables.scan(table.uri, paths, where=where):
                if unlabeled(model_items, pa.Table.from_batches([batch])).num_rows < model_items.num_rows:
                    log.warning("shard %d: another run of %s committed some of its items first; "
                                "dropping it and planning its items again", shard.index, model)
                    return True
        return False

    def _ours(self, path: str) -> bool:
        found = files.parse(path)
        return found is not None and found.run_id == self.identity.run_id

    def _delete(self, prediction_paths: list[str], stats_file: FileStats) -> None:
        """Only this attempt could ever commit these files, and it will not: they go."""
        for path in prediction_paths:
            storage.remove_file(self.layout.data_file("predictions", path))
        storage.remove_file(self.layout.data_file("channel_stats", stats_file.path))


def shard_app(run_id: str, shard: ShardPlan) -> str:
    return tables.app_id(run_id, shard.index, shard.digest)


def partition_apps(models: tuple[ModelIdentity, ...], shard: ShardPlan) -> tuple[str, ...]:
    """The application ids a shard's commit sets besides its own: one per (model identity, hash
    partition) of the items planned for that model, so that two runs committing the same items for
    the same model collide."""
    per_model = shard.model_partitions or (shard.partitions,)
    return tuple(tables.app_id(model.key, "partition", p)
                 for model, partitions in zip(models, per_model, strict=True) for p in partitions)


def commit_predictions(
    table: Table,
    attempt: Attempt,
    app: str,
    adds: list[FileStats],
    *,
    run_date: str,
    shard: int,
    partition_apps: tuple[str, ...] = (),
    labeled_meanwhile: Callable[[Table], bool] | None = None,
) -> bool:
    """Add a shard's prediction files to the predictions table, once, while ``attempt`` holds its
    run (else :class:`pipeline.fencing.Fenced`); False if ``labeled_meanwhile`` says another run
    committed some of its items first."""
    apps = dict.fromkeys((app, run_app(attempt.run_id), *partition_apps), attempt.version)
    for _ in range(COMMIT_ATTEMPTS):
        table.refresh()
        done = table.app_version(app)
        if done == attempt.version:
            return True  # committed, maybe by a try that reported a failure
        check_owner(table, attempt)
        if done is not None:
            log.warning("shard %d of run %s was committed by another attempt of the run; dropping this one's",
                        shard, attempt.run_id)
            return False
        if labeled_meanwhile is not None and labeled_meanwhile(table):
            return False
        try:
            table.commit(adds, run_date=run_date, apps=apps,
                         metadata={"run_id": attempt.run_id, "attempt": attempt.token, "shard": str(shard)})
            return True
        except ConcurrentCommit:
            continue
    raise RunFailed(f"shard {shard} could not be committed: {COMMIT_ATTEMPTS} attempts met concurrent "
                    "commits of the same items; run the same command again")


def commit_channel_stats(table: Table, app: str, version: int, stats_file: FileStats, *, run_date: str,
                         run_id: str, shard: int) -> None:
    """Add a shard's statistics file to the channel_stats table, once, marked with the version of
    the attempt whose predictions commit it goes with."""
    for _ in range(COMMIT_ATTEMPTS):
        table.refresh()
        if table.app_version(app) is not None:
            return
        try:
            table.commit([stats_file], run_date=run_date, apps={app: version},
                         metadata={"run_id": run_id, "shard": str(shard)})
            return
        except ConcurrentCommit:
            continue
    raise RunFailed(f"the channel statistics of shard {shard} could not be committed; run the same command again")


def write_and_commit(layout: OutputLayout, tables_: Tables, identity: RunIdentity, attempt: Attempt, *,
                     shard: int, digest: str, rows: pa.Table, stats: pa.Table) -> FileStats:
    """Write one shard's finished prediction rows and channel statistics as new files of ``attempt``
    and commit them, outside a Ray run (tools, benchmarks, tests); returns the predictions file.
    The rows are not checked, and no other run's commits are looked at."""
    written = files.write_parquet(layout.table("predictions"), rows.select(PREDICTIONS.names).cast(PREDICTIONS),
                                  run_id=identity.run_id, attempt=attempt.token, run_date=identity.run_date,
                                  shard=shard, digest=digest)
    stats_file = files.write_parquet(layout.table("channel_stats"), stats, run_id=identity.run_id,
                                     attempt=attempt.token, run_date=identity.run_date, shard=shard, digest=digest)
    app = tables.app_id(identity.run_id, shard, digest)
    commit_predictions(tables_.predictions, attempt, app, [written], run_date=identity.run_date, shard=shard)
    commit_channel_stats(tables_.channel_stats, app, attempt.version, stats_file, run_date=identity.run_date,
                         run_id=identity.run_id, shard=shard)
    return written


def check_rows(rows: pa.Table, items: pa.Array | pa.ChunkedArray, *, where: str) -> None:
    """Every item has rows, nothing else does, and each item's segments are 0..n-1 exactly once."""
    per_uri = rows.group_by("uri").aggregate(
        [("segment", "count"), ("segment", "count_distinct"), ("segment", "min"), ("segment", "max")]
    )
    repeated = per_uri.filter(pc.not_equal(per_uri["segment_count"], per_uri["segment_count_distinct"]))
    if repeated.num_rows:
        raise InternalError(f"{where}: {repeated.num_rows} items have a segment twice "
                            f"(e.g. {repeated['uri'][0].as_py()!r}); it was not committed")
    gapped = per_uri.filter(pc.or_(
        pc.not_equal(per_uri["segment_min"], 0),
        pc.not_equal(pc.add(per_uri["segment_max"], 1), per_uri["segment_count"]),
    ))
    if gapped.num_rows:
        raise InternalError(f"{where}: {gapped.num_rows} items miss a segment between 0 and their last "
                            f"(e.g. {gapped['uri'][0].as_py()!r}); it was not committed")
    wanted = pa.table({"uri": items})
    missing = wanted.join(per_uri.select(["uri"]), "uri", join_type="left anti")
    extra = per_uri.select(["uri"]).join(wanted, "uri", join_type="left anti")
    if missing.num_rows or extra.num_rows:
        sample = (missing if missing.num_rows else extra)["uri"][0].as_py()
        raise InternalError(f"{where}: its rows do not match its items: {missing.num_rows} items without a row, "
                            f"{extra.num_rows} rows of items it does not have (e.g. {sample!r}); it was not committed")


def check_model_errors(rows: pa.Table, *, where: str) -> None:
    """The model failing on every row of a shard with one exception type is our bug, not bad input:
    the run stops as an internal error instead of committing a model_error row for each."""
    if rows.num_rows < 2 or not pc.all(pc.equal(rows["status"], Status.MODEL_ERROR.value)).as_py():
        return
    kinds = {error.split(":", 1)[0] for error in pc.unique(rows["error"]).to_pylist() if error}
    if len(kinds) == 1:
        raise InternalError(f"{where}: the model failed on all its {rows.num_rows} rows with {kinds.pop()} "
                            f"(e.g. {rows['error'][0].as_py()!r}); that is not bad input")


def _count(status: pa.ChunkedArray) -> dict[str, int]:
    return dict(sorted((c["values"], c["counts"]) for c in pc.value_counts(status).to_pylist()))


def _labels(rows: pa.Table) -> tuple[dict[str, int], list[int]]:
    """The ok rows per top-1 label, and per bin of the top-1 score (SCORE_BINS over [0, 1])."""
    ok = rows.filter(pc.equal(rows["status"], Status.OK.value))
    counts = {c["values"]: c["counts"] for c in pc.value_counts(ok["label"]).to_pylist() if c["values"] is not None}
    scores = ok["score"].drop_null().to_numpy()
    histogram, _ = np.histogram(scores, bins=SCORE_BINS, range=(0.0, 1.0))
    return dict(sorted(counts.items())), [int(n) for n in histogram]


def _errors(rows: pa.Table, limit: int = 10) -> tuple[tuple[str, str, int, str], ...]:
    bad = rows.filter(pc.not_equal(rows["status"], Status.OK.value))
    if bad.num_rows == 0:
        return ()
    grouped = bad.group_by(["status", "error"]).aggregate([("uri", "count"), ("uri", "min")])
    grouped = grouped.sort_by([("uri_count", "descending")]).slice(0, limit)
    return tuple((r["status"], r["error"], r["uri_count"], r["uri_min"]) for r in grouped.to_pylist())


ErrorKey = tuple[str, str]  # (status, error)


def merge_errors(found: Counter[ErrorKey], examples: dict[ErrorKey, str],
                 errors: tuple[tuple[str, str, int, str], ...]) -> None:
    for status, error, count, uri in errors:
        found[(status, error)] += count
        examples.setdefault((status, error), uri)


def top_errors(found: Counter[ErrorKey], examples: dict[ErrorKey, str], limit: int = 10) -> list[dict[str, Any]]:
    return [{"status": s, "error": e, "count": n, "uri": examples[(s, e)]} for (s, e), n in found.most_common(limit)]

