"""One labeling run, top to bottom as the data flows:

plan (listing -> shards on local disk -> what is labeled) -> read shards -> decode (Ray tasks)
-> GhostNet (actor pool) -> write Parquet (tasks) -> commit shard by shard (driver).

One Ray Data execution streams every shard through one actor pool, so the model never waits for
a commit; the driver commits each shard as soon as the write stage has reported all its files.
A run labels one modality with one model or several (``RunConfig.models``): each item is decoded
once per distinct preprocessing and labeled by the models that have not labeled it yet, and one
shard's rows of all models commit together. ``--modality auto`` lists the inputs once and labels
each modality found as a run of its own, in one Ray session (:func:`run_by_modality`).

The driver process is one *attempt* of its run (:mod:`pipeline.fencing`): it holds the run in the
predictions log while it commits, its :class:`pipeline.runstate.RunState` owns the run's record,
and when it stops on an error it settles its own files (:mod:`pipeline.recovery`).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from pipeline import discover, failpoints, fencing, kinds, plan, recovery, storage, tables
from pipeline import record as records
from pipeline.commit import CommitOutcome, RunIdentity, ShardCommitter
from pipeline.config import ModelEntry, RunConfig
from pipeline.delta import DeltaLog, open_tables
from pipeline.errors import InternalError, RunFailed, UsageError, raised_by_us
from pipeline.fencing import Attempt, Host
from pipeline.kinds import AUTO, Modality
from pipeline.model import ModelIdentity, ModelSpec
from pipeline.plan import Listing, Plan
from pipeline.record import ModelRecord, RunRecord, validate_run_date, validate_run_id
from pipeline.runstate import RunState
from pipeline.tables import OutputLayout, Table, Tables

if TYPE_CHECKING:
    import ghostnet

__all__ = ["Engine", "ModelPlan", "PlanSummary", "label", "model_specs", "new_run_id", "plan_by_modality", "run",
           "run_by_modality"]

log = logging.getLogger("ghostnet_pipeline")

REPLANS = 3  # rounds of planning again the items of shards another run labeled first
BYTES_PER_ROW = 210  # measured: a 100k-item run wrote 19.8 MiB (bench/RESULTS.md, output files)
BYTES_PER_EMBEDDING = 1280 * 4


class Engine(Protocol):
    """What an attempt needs to turn planned shards into written files: the Ray Data plan in a run
    (:class:`pipeline.stages.RayEngine`); a direct writer in the commit protocol's checker."""

    def stream(self, planned: Plan, identity: RunIdentity, attempt: Attempt, state: RunState) -> Iterator[pa.Table]:
        """Manifests of the files written (:data:`pipeline.sink.MANIFEST`), batch by batch."""

    def committed(self, outcome: CommitOutcome) -> None:
        """A shard committed: progress and metrics."""

    def close(self, state: RunState) -> None:
        """The attempt ends: what the engine measured goes into the record."""


# Starts an attempt's engine: (run id, seconds spent listing, seconds spent planning) -> Engine.
EngineStarter = Callable[[str, float, float], Engine]

# What the stages import in Ray's workers: imported there while the driver loads the model (cluster.starting).
WORKER_MODULES = ("pipeline.predict", "pipeline.decode", "pipeline.sink")


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class ModelPlan:
    """What a run would do for one of its models."""

    model: str
    weights_sha256: str
    role: str | None
    decode_group: int  # models of one group share one decode (the same preprocessing)
    already_labeled: int
    to_label: int


@dataclass(frozen=True)
class PlanSummary:
    """What a run would do: ``--dry-run`` prints it. ``model``, ``weights_sha256`` are the first
    model's; ``already_labeled`` counts items every model labeled, ``to_label`` items some model
    labels; ``models`` says it per model."""

    modality: str
    model: str
    weights_sha256: str
    output: str
    objects_listed: int
    not_items: dict[str, int]
    items_listed: int
    duplicates: int
    already_labeled: int
    to_label: int
    shard_size: int
    shards: int
    estimated_files: int
    estimated_bytes: int
    list_s: float  # listing the inputs into partitions (all modalities)
    diff_s: float  # reading what is labeled, diffing and cutting shards (this modality)
    nothing_because: str | None = None  # why the run would label nothing at all, before any plan
    models: tuple[ModelPlan, ...] = ()

    @classmethod
    def of(cls, config: RunConfig, specs: list[ModelSpec], groups: list[int], listing: Listing, planned: Plan,
           diff_s: float) -> PlanSummary:
        rows_per_file = config.rows_per_file
        files = sum(-(-s.pairs // rows_per_file) for s in planned.shards)
        size = sum(planned.model_items(i) * (BYTES_PER_ROW + (BYTES_PER_EMBEDDING if config.embeddings_of(e) else 0))
                   for i, e in enumerate(config.models))
        models = tuple(ModelPlan(spec.name, spec.identity(), entry.role, group, planned.model_labeled[i],
                                 planned.model_items(i))
                       for i, (spec, entry, group) in enumerate(zip(specs, config.models, groups, strict=True)))
        return cls(planned.modality, specs[0].name, specs[0].identity(), storage.redact_uri(config.output),
                   listing.listed, dict(sorted(listing.skipped.items())), planned.items_listed, planned.duplicates,
                   planned.items_labeled, planned.items, planned.shard_size, len(planned.shards), files,
                   size, round(listing.seconds, 3), round(diff_s, 3), models=models)


def plan_by_modality(config: RunConfig, *, kind: str = "run") -> list[PlanSummary]:
    """``--dry-run``: list, diff and cut shards, and say what a run would do. Starts no Ray, writes
    nothing to the output, and loads no model unless there are several (to group their decoding)."""
    layout = OutputLayout.of(config.output)
    with _listed(config) as (listing, work):
        summaries = []
        for modality_config in _per_modality(config, listing):
            specs = model_specs(modality_config)
            started = time.monotonic()
            done = _committed_nights(layout, config.run_date, specs) if kind == "nightly" else {}
            left = [i for i, spec in enumerate(specs) if spec.model_identity() not in done]
            if left and len(left) < len(specs):
                modality_config = modality_config.keeping_models(left)
                specs = [specs[i] for i in left]
            # One model decodes alone; several are loaded to group them by their preprocessing.
            groups = [0] if len(specs) == 1 else kinds.decode_groups(modality_config.modality,
                                                                        [_meta(s) for s in specs])
            identity = _identity(modality_config, specs, run_id=config.resume or "dry-run", run_date=config.run_date)
            predictions = DeltaLog.open(layout.table("predictions"), "predictions")
            planned, _ = _plan(modality_config, layout, predictions, listing, identity, work / modality_config.modality)
            summary = PlanSummary.of(modality_config, specs, groups, listing, planned, time.monotonic() - started)
            if not left:
                summary = replace(summary, already_labeled=summary.already_labeled + summary.to_label, to_label=0,
                                  shards=0, estimated_files=0, estimated_bytes=0,
                                  nothing_because=_night_done(config.run_date, sorted(set(done.values()))),
                                  models=tuple(replace(m, already_labeled=m.already_labeled + m.to_label, to_label=0)
                                               for m in summary.models))
            summaries.append(summary)
        return summaries


def run(config: RunConfig, *, kind: str = "run") -> RunRecord:
    """Label every item of ``config.inputs`` that this model and weights have not labeled yet; the
    record of the first modality labeled (all of them: :func:`run_by_modality`)."""
    return run_by_modality(config, kind=kind)[0]


def run_by_modality(config: RunConfig, *, kind: str = "run") -> list[RunRecord]:
    """Label the inputs, one run per modality found (one, unless ``--modality auto``), in one Ray session.

    ``kind="nightly"`` makes each run idempotent per date: once a nightly run of this model and
    weights committed ``config.run_date``, nothing is done; a night whose run stopped early
    goes on from what it committed.
    """
    from pipeline import cluster

    with _listed(config) as (listing, work):
        # Ray starts in the background while every model's weights are checked and the models load
        # (torch's import with them) and their memory is checked; then the output's tables are opened
        # (created if new). A bad model, weights file or output is a usage error that leaves the output
        # as it was, once Ray is shut down again.
        layout = OutputLayout.of(config.output)
        with cluster.starting(config.address, num_cpus=config.num_cpus, warm=WORKER_MODULES) as join_ray:
            models = [(c, _checked_models(c)) for c in _per_modality(config, listing)]
            tables_ = _open_tables(layout)
            from pipeline.stages import RayEngine  # torch, Ray Data: imported while Ray starts

            join_ray()
            return [label(c, [spec for spec, _ in checked], kind=kind, layout=layout, tables_=tables_, listing=listing,
                          work=work / c.modality, host=Host(), labels=[len(meta.labels) for _, meta in checked],
                          engine=RayEngine.starter(c, checked, layout))
                    for c, checked in models]


@contextlib.contextmanager
def _listed(config: RunConfig) -> Iterator[tuple[Listing, Path]]:
    work = Path(tempfile.mkdtemp(prefix="ghostnet-plan-"))
    try:
        modalities = list(config.modalities)
        listing = plan.spill_listing(discover.list_inputs(config.inputs), work / "listing", modalities)
        log.info("listed %d objects in %.1f s", listing.listed, listing.seconds)
        yield listing, work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _per_modality(config: RunConfig, listing: Listing) -> list[RunConfig]:
    if config.modality != AUTO:
        return [config]
    found = [m for m in config.modalities if listing.items[m]]
    return [config.for_modality(m) for m in found] or [config.for_modality(Modality.IMAGE)]


def model_specs(config: RunConfig) -> list[ModelSpec]:
    """The models of ``config``, in order, each with its weights file's digest pinned (read, not loaded)."""
    return [_spec_of(config, entry) for entry in config.models]


def model_spec(config: RunConfig) -> ModelSpec:
    """The first model of ``config`` (:func:`model_specs`)."""
    return _spec_of(config, config.models[0])


def _spec_of(config: RunConfig, entry: ModelEntry) -> ModelSpec:
    import ghostnet

    if entry.name not in ghostnet.list_models():
        close = difflib.get_close_matches(entry.name, ghostnet.list_models(), n=3)
        raise UsageError(f"--model {entry.name!r} is not a GhostNet variant"
                         f"{f'; did you mean {close[0]!r}' if close else ''}? See `ghostnet-pipeline models`")
    spec = ModelSpec(entry.name, entry.weights, entry.weights_sha256, seed=config.seed,
                     num_classes=config.num_classes, modality=config.modality)
    weights = spec.weights
    if weights is not None and not spec.is_random and not weights.startswith("hf-hub:") and not storage.exists(weights):
        raise UsageError(f"--weights {storage.redact_uri(weights)} does not exist; check the path or URI")
    return spec.pinned()


def _identity(config: RunConfig, specs: list[ModelSpec], *, run_id: str, run_date: str) -> RunIdentity:
    return RunIdentity(run_id, run_date, tuple(spec.model_identity() for spec in specs), config.reprocess)


def _meta(spec: ModelSpec) -> ghostnet.ModelMeta:
    meta = spec.load().meta
    if meta is None:
        raise InternalError(f"{spec.name} was built without its metadata")
    return meta


def _checked_models(config: RunConfig) -> list[tuple[ModelSpec, ghostnet.ModelMeta]]:
    """Every model's spec and metadata, each loaded once on the driver (digest, shapes) before
    anything is scheduled, and their memory checked against the actors' device; actors load them
    again themselves, pinned to the digests checked here (hub weights are pinned to the digest of
    the file the hub gave)."""
    from pipeline import footprint

    checked, sizes = [], []
    for spec in model_specs(config):
        model = spec.load()
        if spec.weights_sha256 is None and model.weights_sha256 is not None:
            spec = replace(spec, weights_sha256=model.weights_sha256)
        if spec.is_random:
            log.warning("using random weights (seed %d) for %s: predictions are meaningless", spec.seed, spec.name)
        if model.meta is None:
            raise InternalError(f"{spec.name} was built without its metadata")
        checked.append((spec, model.meta))
        sizes.append(footprint.model_bytes(model))
        del model
    footprint.check_driver(config, [(spec.name, meta, size) for (spec, meta), size in zip(checked, sizes, strict=True)])
    return checked


def _open_tables(layout: OutputLayout) -> Tables:
    """The output's tables, created if they are new: this is also where an unwritable output shows."""
    try:
        return open_tables(layout)
    except Exception as exc:  # noqa: BLE001 - any failure to create is the output's, reported as such
        reason = storage.redact(str(exc)).strip()[:300]
        raise UsageError(
            f"cannot write to --output {storage.redact_uri(layout.root)}: {reason}. "
            "Check that the path or bucket exists and that these credentials may write to it"
        ) from None


def label(config: RunConfig, specs: ModelSpec | list[ModelSpec], *, kind: str, layout: OutputLayout, tables_: Tables,
          listing: Listing, work: Path, host: Host, labels: int | list[int], engine: EngineStarter) -> RunRecord:
    """One modality's run, as one attempt of it on ``host``: finish dead runs, plan, then stream the
    shards through ``engine`` and commit them. Needs no Ray itself: the engine brings it.

    ``specs``: the run's models, in the order of ``config.models`` (one alone for a run of one);
    ``labels``: the classes of each one's head. A nightly run leaves out the models whose night is
    committed already."""
    if config.modality == AUTO:
        raise UsageError(f"a run labels one modality, got {config.modality!r}; use run_by_modality for auto")
    specs = [specs] if isinstance(specs, ModelSpec) else list(specs)
    heads = [labels] * len(specs) if isinstance(labels, int) else list(labels)
    started = time.monotonic()
    for finished in recovery.recover_dead_runs(layout, tables_, host):
        log.warning("finished run %s, whose driver died: fenced it and cleared its uncommitted files", finished)
    run_id, run_date, earlier = _run_id_and_date(config, layout, specs, kind)
    if kind == "nightly" and (done := _committed_nights(layout, run_date, specs)):
        left = [i for i, spec in enumerate(specs) if spec.model_identity() not in done]
        if not left:
            return _nothing(config, specs[0], run_id, run_date, kind, _night_done(run_date, sorted(set(done.values()))))
        config, specs, heads = config.keeping_models(left), [specs[i] for i in left], [heads[i] for i in left]
    identity = _identity(config, specs, run_id=run_id, run_date=run_date)
    t = time.monotonic()
    planned, known = _plan(config, layout, tables_.predictions, listing, identity, work)
    record = _new_record(config, specs, heads, identity, kind, listing, planned, earlier)
    record.timings["plan_s"] = round(time.monotonic() - t, 3)
    if planned.items == 0:
        record.status, record.finished_at = records.COMMITTED, records.now(host.clock())
        record.timings["total_s"] = round(time.monotonic() - started, 3)
        if earlier is not None:
            records.write(layout.runs, record, clock=host.clock())
        return record
    attempt = Attempt.new(run_id)
    if earlier is not None:
        fencing.claim(tables_.predictions, attempt, run_date)
    state = RunState(layout, record, attempt, host)
    state.planned(planned.items, len(planned.shards))
    running = engine(run_id, listing.seconds, record.timings["plan_s"])
    with state.heartbeat(tables_.predictions.clone()):
        try:
            for _ in range(REPLANS):
                if not _commit_stream(config, running, planned, layout, tables_, identity, attempt, known, state,
                                      host):
                    break
                planned, known = _plan(config, layout, tables_.predictions, listing, identity, work)
                state.planned(planned.items, len(planned.shards))
                if planned.items == 0:
                    break
            else:
                raise RunFailed(
                    f"{planned.items} items are still not labeled after {REPLANS} rounds: other runs of this model "
                    "and weights kept committing some of the same items first. Run the same command again (it "
                    "labels only what is left), or run one command at a time on this output")
        except BaseException as exc:
            reason = _stop_reason(state, exc)
            running.close(state)
            _stop(layout, tables_, state, attempt, run_date, reason)
            if reason is exc:
                raise
            raise reason from None
    running.close(state)
    state.timed("total_s", time.monotonic() - started)
    return state.finished()


def _commit_stream(config: RunConfig, engine: Engine, planned: Plan, layout: OutputLayout, tables_: Tables,
                   identity: RunIdentity, attempt: Attempt, known: frozenset[str], state: RunState,
                   host: Host) -> int:
    """Stream the planned shards through ``engine`` and commit them; returns the shards dropped
    because another run labeled their items first."""
    conflicts = 0

    def on_outcome(outcome: CommitOutcome) -> None:
        nonlocal conflicts
        if not outcome.committed:
            conflicts += 1
            return
        state.committed(outcome)
        engine.committed(outcome)
        failpoints.hit("shard.after-commit")

    committer = ShardCommitter(layout, tables_, planned, identity, attempt, journal=state, on_outcome=on_outcome,
                               max_error_rate=config.max_error_rate, known_files=known, started=time.monotonic(),
                               host=host)
    for manifests in engine.stream(planned, identity, attempt, state):
        state.check()
        committer.add(manifests)
    committer.finish()
    return conflicts


def _stop_reason(state: RunState, exc: BaseException) -> BaseException:
    """Why the attempt stops: the heartbeat's reason when it interrupted the driver, a worker's
    RunFailed or InternalError rather than Ray's wrapping of it, else ``exc``."""
    if isinstance(exc, KeyboardInterrupt):
        try:
            state.check()
        except RunFailed as stopped:
            return stopped
    return raised_by_us(exc) or exc


def _stop(layout: OutputLayout, tables_: Tables, state: RunState, attempt: Attempt, run_date: str,
          reason: BaseException) -> None:
    """The attempt stops: it settles its own files (the statistics of what it committed, and the
    files no one will commit), and its record says why and, as the log says, what committed. A
    fenced attempt leaves its record to whoever fenced it."""
    try:
        recovery.settle_attempt(layout, tables_, attempt, run_date)
        recovery.reconcile(state.record, tables_)
    except Exception as exc:  # noqa: BLE001 - the next run on the output finishes it, from the live record
        log.warning("run %s: could not settle its uncommitted files (%s); the next run on this output will",
                    attempt.run_id, storage.redact(f"{type(exc).__name__}: {exc}"))
        return
    try:
        state.failed(reason)
    except Exception as exc:  # noqa: BLE001 - the live record stays; the next run on the output finishes it
        log.warning("run %s: could not write its final record (%s)", attempt.run_id,
                    storage.redact(f"{type(exc).__name__}: {exc}"))


def _run_id_and_date(config: RunConfig, layout: OutputLayout, specs: list[ModelSpec],
                     kind: str) -> tuple[str, str, RunRecord | None]:
    """The run's id and date, and for ``--resume`` the record of the run it continues."""
    if not config.resume:
        run_id = config.run_id or (f"nightly-{config.run_date}-{secrets.token_hex(4)}" if kind == "nightly"
                                   else new_run_id())
        return validate_run_id(run_id), validate_run_date(config.run_date), None
    live = records.load_live(layout.runs, config.resume)
    if live is not None:  # dead runs were finished just before: this one is alive
        raise UsageError(f"--resume {config.resume}: that run is still going (attempt {live.attempt} on {live.host}, "
                         f"pid {live.pid}); wait until it ends, or stop it and run this again once it is judged "
                         f"dead ({fencing.STALE_AFTER_S:.0f} s after its last heartbeat)")
    earlier = records.load_final(layout.runs, config.resume)
    if earlier is None:
        raise UsageError(f"--resume {config.resume}: no run with that id on {storage.redact_uri(layout.root)}")
    if _identities(earlier) != [spec.model_identity() for spec in specs]:
        used = ", ".join(str(i) for i in _identities(earlier))
        raise UsageError(f"--resume {config.resume}: that run used {used}, not the models and weights given here "
                         "(give the same ones, in the same order)")
    return earlier.run_id, earlier.run_date, earlier


def _identities(record: RunRecord) -> list[ModelIdentity]:
    """The models of a run's record, in order (a record from before several models: its one)."""
    return ([ModelIdentity(m.model, m.weights_sha256) for m in record.models]
            or [ModelIdentity(record.model, record.weights_sha256)])


def _committed_nights(layout: OutputLayout, run_date: str, specs: list[ModelSpec]) -> dict[ModelIdentity, str]:
    """The models of ``specs`` whose night ``run_date`` a committed nightly run labeled, and that run."""
    wanted = {spec.model_identity() for spec in specs}
    done: dict[ModelIdentity, str] = {}
    for record in records.load_all(layout.runs, prefix=f"nightly-{run_date}-"):
        if record.committed and record.kind == "nightly":
            for identity in _identities(record):
                if identity in wanted:
                    done.setdefault(identity, record.run_id)
    return done


def _night_done(run_date: str, run_ids: list[str]) -> str:
    return f"night {run_date} is already committed by run {', '.join(run_ids)}: nothing to add"


def _plan(config: RunConfig, layout: OutputLayout, predictions: Table | None, listing: Listing,
          identity: RunIdentity, work: Path) -> tuple[Plan, frozenset[str]]:
    """Cut the shards and mark each item with the models that still label it: for each model, what
    counts as labeled is the rows of that model and weights, or with ``--reprocess --resume`` that
    model's rows of the resumed run, or with ``--reprocess`` nothing. Also returns the table's files
    at planning time."""
    shutil.rmtree(work, ignore_errors=True)
    known: frozenset[str] = frozenset()
    labeled: list[plan._Partitions | None] = [None] * len(identity.models)
    if predictions is not None:
        predictions.refresh()
        files = predictions.files()
        known = frozenset(files["path"].to_pylist())
        uri_range = listing.uri_range(config.modality)
        if uri_range and (not config.reprocess or config.resume):
            for i, model in enumerate(identity.models):
                where = {"model": model.model, "weights_sha256": model.weights_sha256}
                if config.reprocess:
                    where["run_id"] = identity.run_id
                done = tables.files_overlapping(tables.files_holding(files, **where), *uri_range)
                keys = tables.scan(layout.table("predictions"), done["path"].to_pylist(), where=where)
                labeled[i] = plan.spill_keys(keys, work / f"labeled-{i}")
    planned = plan.cut_shards(listing, labeled, modality=config.modality, shard_size=config.shard_size,
                              folder=work / "shards")
    return planned, known


def _new_record(config: RunConfig, specs: list[ModelSpec], labels: list[int], identity: RunIdentity, kind: str,
                listing: Listing, planned: Plan, earlier: RunRecord | None) -> RunRecord:
    """The record of this attempt; a resume's keeps what the run committed before."""
    models = [ModelRecord(spec.name, storage.redact_uri(entry.weights or "random"), spec.identity(), entry.role,
                          heads, planned.model_labeled[i])
              for i, (spec, entry, heads) in enumerate(zip(specs, config.models, labels, strict=True))]
    record = RunRecord(
        run_id=identity.run_id, kind=kind, run_date=identity.run_date, model=models[0].model,
        weights=models[0].weights, weights_sha256=models[0].weights_sha256,
        modality=config.modality, labels=labels[0], inputs=[storage.redact_uri(u) for u in config.inputs],
        reprocess=config.reprocess, not_items=dict(sorted(listing.skipped.items())), shard_size=config.shard_size,
        config=_safe_config(config), versions=dict(_versions()), items_listed=planned.items_listed,
        duplicates=planned.duplicates, items_skipped=planned.items_labeled, items_to_label=planned.items,
        shards_total=len(planned.shards), models=models,
    )
    if earlier is not None:
        for shard in earlier.shards:
            record.add_shard(shard)
        before = earlier.models or [ModelRecord(earlier.model, earlier.weights, earlier.weights_sha256,
                                                label_counts=earlier.label_counts,
                                                score_histogram=earlier.score_histogram)]
        record.add_labels(tuple((m.label_counts, m.score_histogram) for m in before))
        record.top_errors, record.conflicts = earlier.top_errors, earlier.conflicts
        record.started_at = earlier.started_at
        record.items_skipped = max(0, planned.items_labeled - record.items)
        for model in record.models:
            model.items_skipped = max(0, model.items_skipped - model.items)
        record.shards_total = record.shards_committed + len(planned.shards)
    return record


def _nothing(config: RunConfig, spec: ModelSpec, run_id: str, run_date: str, kind: str, message: str) -> RunRecord:
    """The record of a run with nothing to do: ``spec`` is its first model."""
    return RunRecord(run_id=run_id, kind=kind, run_date=run_date, model=spec.name,
                     weights=storage.redact_uri(config.weights or "random"), weights_sha256=spec.identity(),
                     modality=config.modality, status=records.COMMITTED, error=message)


def _safe_config(config: RunConfig) -> dict[str, Any]:
    values = config.to_record()
    values["inputs"] = [storage.redact_uri(u) for u in config.inputs]
    values["output"] = storage.redact_uri(config.output)
    for name in ("weights", "audio_weights", "address"):
        if values.get(name):
            values[name] = storage.redact_uri(values[name])
    for name in ("models", "audio_models"):
        for entry in values.get(name) or []:
            entry["weights"] = storage.redact_uri(entry["weights"] or "random")
    return values


@functools.cache
def _versions() -> dict[str, str]:
    """What the record names as the software that labeled (read once: each lookup scans site-packages)."""
    names = ("ghostnet-pipeline", "torch", "ray", "pyarrow", "deltalake", "pillow", "soundfile", "soxr", "onnxruntime")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found
