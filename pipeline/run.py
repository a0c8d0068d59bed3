"""One labeling run, top to bottom as the data flows:

plan (listing -> shards on local disk -> what is labeled) -> read shards -> decode (Ray tasks)
-> GhostNet (actor pool) -> write Parquet (tasks) -> commit shard by shard (driver).

One Ray Data execution streams every shard through one actor pool, so the model never waits for
a commit; the driver commits each shard as soon as the write stage has reported all its files.
A run labels one modality with one model; ``--modality auto`` is :func:`run_by_modality`: the
inputs are listed once and each modality is a run of its own, in one Ray session.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from pipeline import discover, metrics, plan, recovery, storage, tables
from pipeline import record as records
from pipeline.commit import CommitOutcome, RunIdentity, ShardCommitter, merge_errors, top_errors
from pipeline.config import RunConfig
from pipeline.errors import UsageError, raised_by_us
from pipeline.model import ModelSpec
from pipeline.plan import Listing, Plan
from pipeline.progress import Progress
from pipeline.record import RunRecord, validate_run_date, validate_run_id
from pipeline.tables import OutputLayout

__all__ = ["PlanSummary", "new_run_id", "plan_by_modality", "run", "run_by_modality"]

log = logging.getLogger("ghostnet_pipeline")

REPLANS = 3  # rounds of planning again the items of shards another run labeled first
HEARTBEAT_S = 30.0
BYTES_PER_ROW = 210  # measured: a 100k-item run wrote 19.8 MiB (bench/RESULTS.md, output files)
BYTES_PER_EMBEDDING = 1280 * 4
FAULT = "GHOSTNET_PIPELINE_FAULT"  # tests only: "<point>:<n>" kills the driver's process group there


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class PlanSummary:
    """What a run would do: ``--dry-run`` prints it."""

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

    @classmethod
    def of(cls, config: RunConfig, spec: ModelSpec, listing: Listing, planned: Plan, diff_s: float) -> PlanSummary:
        rows_per_file = config.rows_per_file
        files = sum(-(-s.items // rows_per_file) for s in planned.shards)
        per_row = BYTES_PER_ROW + (BYTES_PER_EMBEDDING if config.embeddings else 0)
        return cls(planned.modality, spec.name, spec.identity(), storage.redact_uri(config.output),
                   listing.listed, dict(sorted(listing.skipped.items())), planned.items_listed, planned.duplicates,
                   planned.items_labeled, planned.items, planned.shard_size, len(planned.shards), files,
                   planned.items * per_row, round(listing.seconds, 3), round(diff_s, 3))


def plan_by_modality(config: RunConfig, *, kind: str = "run") -> list[PlanSummary]:
    """``--dry-run``: list, diff and cut shards, and say what a run would do. Starts no Ray, loads no
    model, writes nothing to the output."""
    with _listed(config) as (listing, work):
        summaries = []
        for modality_config in _per_modality(config, listing):
            spec = model_spec(modality_config)
            layout = OutputLayout.of(config.output)
            identity = _identity(modality_config, spec, run_id=config.resume or "dry-run", run_date=config.run_date)
            started = time.monotonic()
            planned, _ = _plan(modality_config, layout, listing, identity, work / modality_config.modality)
            summaries.append(PlanSummary.of(modality_config, spec, listing, planned, time.monotonic() - started))
        return summaries


def run_by_modality(config: RunConfig, *, kind: str = "run") -> list[RunRecord]:
    """``run(config)``, or for ``--modality auto`` one run per modality found, in one Ray session."""
    from pipeline import cluster

    with _listed(config) as (listing, work):
        # Inputs, weights and output are checked, in that order, before anything is written or started.
        models = [(c, _checked_model(c)) for c in _per_modality(config, listing)]
        _open_tables(OutputLayout.of(config.output))
        with cluster.connect(config.address, num_cpus=config.num_cpus):
            return [run(c, kind=kind, listing=listing, work=work / c.modality, model=model)
                    for c, model in models]


@contextlib.contextmanager
def _listed(config: RunConfig) -> Iterator[tuple[Listing, Path]]:
    work = Path(tempfile.mkdtemp(prefix="ghostnet-plan-"))
    try:
        modalities = ["image", "audio"] if config.modality == "auto" else [config.modality]
        listing = plan.spill_listing(discover.list_inputs(config.inputs), work / "listing", modalities)
        log.info("listed %d objects in %.1f s", listing.listed, listing.seconds)
        yield listing, work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _per_modality(config: RunConfig, listing: Listing) -> list[RunConfig]:
    if config.modality != "auto":
        return [config]
    found = [m for m in ("image", "audio") if listing.items[m]]
    return [config.for_modality(m) for m in found] or [config.for_modality("image")]


def model_spec(config: RunConfig) -> ModelSpec:
    """The model of ``config`` with the weights file's digest pinned (read, not loaded)."""
    import ghostnet

    if config.model not in ghostnet.list_models():
        close = difflib.get_close_matches(config.model, ghostnet.list_models(), n=3)
        raise UsageError(f"--model {config.model!r} is not a GhostNet variant"
                         f"{f'; did you mean {close[0]!r}' if close else ''}? See `ghostnet-pipeline models`")
    spec = ModelSpec(config.model, config.weights, config.weights_sha256, seed=config.seed,
                     num_classes=config.num_classes, modality=config.modality)
    weights = spec.weights
    if weights is not None and not spec.is_random and not weights.startswith("hf-hub:") and not storage.exists(weights):
        raise UsageError(f"--weights {storage.redact_uri(weights)} does not exist; check the path or URI")
    return spec.pinned()


def _identity(config: RunConfig, spec: ModelSpec, *, run_id: str, run_date: str) -> RunIdentity:
    return RunIdentity(run_id, run_date, spec.name, spec.identity(), config.reprocess)


def run(config: RunConfig, *, kind: str = "run", listing: Listing | None = None, work: Path | None = None,
        model: tuple[ModelSpec, object] | None = None) -> RunRecord:
    """Label every item of ``config.inputs`` that this model and weights have not labeled yet.

    ``kind="nightly"`` makes the run idempotent per date: once a nightly run of this model and
    weights committed ``config.run_date``, nothing is done; a night whose run stopped early
    goes on from what it committed.
    """
    if listing is None or work is None:
        return run_by_modality(config, kind=kind)[0]
    if config.modality not in ("image", "audio"):
        raise UsageError(f"a run labels one modality, got {config.modality!r}; use run_by_modality for auto")
    started = time.monotonic()
    layout = OutputLayout.of(config.output)
    spec, meta = model or _checked_model(config)
    _open_tables(layout)
    for finished in recovery.recover_dead_runs(layout):
        log.warning("cleared the files of run %s, whose driver died", finished)
    run_id, run_date = _run_id_and_date(config, layout, spec, kind)
    if kind == "nightly" and (night := _committed_night(layout, run_date, spec)):
        return _nothing(config, spec, run_id, run_date, kind, f"night {run_date} is already committed by run "
                        f"{night}: nothing to add")
    identity = _identity(config, spec, run_id=run_id, run_date=run_date)
    record = _new_record(config, spec, meta, identity, kind, listing)
    t = time.monotonic()
    planned, known = _plan(config, layout, listing, identity, work)
    record.timings["plan_s"] = round(time.monotonic() - t, 3)
    _note_plan(record, planned)
    if planned.items == 0:
        record.status = records.COMMITTED
        record.error = None
        return _finish(layout, record, started, write=bool(config.resume))
    records.write(layout.runs, record)
    reporter = metrics.Reporter.start(run_id)
    reporter.stage("listing", listing.seconds)
    reporter.stage("plan", record.timings["plan_s"])
    with _heartbeat(layout, record):
        try:
            for _ in range(REPLANS):
                conflicts = _execute(config, spec, meta, planned, layout, identity, known, record, reporter)
                record.conflicts += conflicts
                if not conflicts:
                    break
                planned, known = _plan(config, layout, listing, identity, work)
                if planned.items == 0:
                    break
                record.shards_total = record.shards_committed + len(planned.shards)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                _note_stages(record, reporter)
            _fail(layout, record, exc)
            raise
    _note_stages(record, reporter)
    record.status = records.COMMITTED
    return _finish(layout, record, started)


def _checked_model(config: RunConfig) -> tuple[ModelSpec, object]:
    """The model's spec and metadata, loaded once on the driver (digest, shapes) before anything is
    scheduled; actors load it again themselves, pinned to the digest checked here."""
    spec = model_spec(config)
    model = spec.load()
    if spec.is_random:
        log.warning("using random weights (seed %d): predictions are meaningless", spec.seed)
    return spec, model.meta


def _open_tables(layout: OutputLayout) -> None:
    """Create the output's tables if they are new: this is also where an unwritable output shows."""
    for name in tables.TABLES:
        try:
            tables.open_table(layout.table(name), name, create=True)
        except Exception as exc:  # noqa: BLE001 - any failure to create is the output's, reported as such
            reason = storage.redact(str(exc)).strip()[:300]
            raise UsageError(
                f"cannot write to --output {storage.redact_uri(layout.root)}: {reason}. "
                "Check that the path or bucket exists and that these credentials may write to it"
            ) from None


def _run_id_and_date(config: RunConfig, layout: OutputLayout, spec: ModelSpec, kind: str) -> tuple[str, str]:
    if not config.resume:
        run_id = config.run_id or (f"nightly-{config.run_date}-{secrets.token_hex(4)}" if kind == "nightly"
                                   else new_run_id())
        return validate_run_id(run_id), validate_run_date(config.run_date)
    earlier = records.load(layout.runs, config.resume)
    if earlier is None:
        raise UsageError(f"--resume {config.resume}: no run with that id on {storage.redact_uri(layout.root)}")
    if (earlier.model, earlier.weights_sha256) != (spec.name, spec.identity()):
        raise UsageError(f"--resume {config.resume}: that run used {earlier.model} with weights "
                         f"{earlier.weights_sha256}, not the model and weights given here")
    if earlier.status == records.RUNNING and not recovery._is_dead(earlier):
        raise UsageError(f"--resume {config.resume}: that run is still going (its record was updated "
                         f"{records.seconds_since_update(earlier):.0f} s ago on {earlier.host})")
    return earlier.run_id, earlier.run_date


def _committed_night(layout: OutputLayout, run_date: str, spec: ModelSpec) -> str | None:
    for record in records.load_all(layout.runs, prefix=f"nightly-{run_date}-"):
        if record.committed and record.kind == "nightly" and (record.model, record.weights_sha256) == (
                spec.name, spec.identity()):
            return record.run_id
    return None


def _plan(config: RunConfig, layout: OutputLayout, listing: Listing, identity: RunIdentity,
          work: Path) -> tuple[Plan, frozenset[str]]:
    """Cut the shards, without what counts as labeled: rows of this model and weights, or with
    ``--reprocess --resume`` the rows of the resumed run, or with ``--reprocess`` nothing."""
    shutil.rmtree(work, ignore_errors=True)
    table = tables.open_table(layout.table("predictions"), "predictions")
    actions = tables.file_actions(table) if table is not None else None
    known = frozenset(actions["path"].to_pylist()) if actions is not None else frozenset()
    uri_range = listing.uri_range(config.modality)
    labeled = None
    if actions is not None and uri_range and (not config.reprocess or config.resume):
        if config.reprocess:
            done = tables.files_where(actions, run_id=identity.run_id)
        else:
            done = tables.files_where(actions, model=identity.model, weights_sha256=identity.weights_sha256)
        done = tables.files_overlapping(done, *uri_range)
        keys = tables.scan(layout.table("predictions"), done["path"].to_pylist())
        labeled = plan.spill_keys(keys, work / "labeled")
    planned = plan.cut_shards(listing, labeled, modality=config.modality, shard_size=config.shard_size,
                              folder=work / "shards")
    return planned, known


def _new_record(config: RunConfig, spec: ModelSpec, meta, identity: RunIdentity, kind: str,
                listing: Listing) -> RunRecord:
    return RunRecord(
        run_id=identity.run_id, kind=kind, run_date=identity.run_date, model=spec.name,
        weights=storage.redact_uri(config.weights or "random"), weights_sha256=identity.weights_sha256,
        modality=config.modality, labels=len(meta.labels), inputs=[storage.redact_uri(u) for u in config.inputs],
        reprocess=config.reprocess, not_items=dict(sorted(listing.skipped.items())), shard_size=config.shard_size,
        config=_safe_config(config), versions=_versions(),
    )


def _note_plan(record: RunRecord, planned: Plan) -> None:
    record.items_listed = planned.items_listed
    record.duplicates = planned.duplicates
    record.items_skipped = planned.items_labeled
    record.items = planned.items
    record.shards_total = len(planned.shards)


def _nothing(config, spec, run_id, run_date, kind, message) -> RunRecord:
    return RunRecord(run_id=run_id, kind=kind, run_date=run_date, model=spec.name,
                     weights=storage.redact_uri(config.weights or "random"), weights_sha256=spec.identity(),
                     modality=config.modality, status=records.COMMITTED, error=message)


def _execute(config: RunConfig, spec: ModelSpec, meta, planned: Plan, layout: OutputLayout, identity: RunIdentity,
             known: frozenset[str], record: RunRecord, reporter: metrics.Reporter) -> int:
    """Stream the planned shards through Ray Data and commit them; returns the shards dropped
    because another run labeled their items first."""
    from pipeline import cluster, stages

    started = time.monotonic()
    placed = stages.placement(config, planned.items)
    record.model_actors = placed.actors
    reporter.planned(items=planned.items, shards=len(planned.shards), actors=placed.actors)
    progress = Progress(shards=len(planned.shards), items=planned.items, run_id=identity.run_id)
    errors: Counter = Counter()
    examples: dict = {}
    conflicts = 0
    fault = _fault()

    def on_outcome(outcome: CommitOutcome) -> None:
        nonlocal conflicts
        shard = outcome.record
        if not outcome.committed or shard is None:
            conflicts += 1
            return
        record.add_shard(shard)
        record.add_labels(outcome.label_counts, outcome.score_histogram)
        merge_errors(errors, examples, outcome.errors)
        record.top_errors = top_errors(errors, examples)
        record.items_per_s = round(sum(s.items for s in record.shards) / max(1e-9, time.monotonic() - started), 3)
        records.write(layout.runs, record)
        progress.committed(shard)
        reporter.shard_committed(items=shard.items, rows_per_status=shard.rows_per_status, commit_s=shard.commit_s,
                                 items_per_s=progress.rate, eta_s=progress.remaining)
        if fault and fault == ("after-commit", record.shards_committed):
            _die()

    committer = ShardCommitter(layout, planned, identity, max_error_rate=config.max_error_rate, known_files=known,
                               on_outcome=on_outcome, started=started,
                               before_commit=lambda n: _die() if fault == ("before-commit", n) else None)
    dataset = stages.build(config, spec, meta, planned, layout, identity, placed=placed, reporter=reporter)
    try:
        for manifests in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            committer.add(manifests)
        committer.finish()
    except Exception as exc:
        ours = raised_by_us(exc)
        if ours is None or ours is exc:
            raise
        raise ours from None  # a worker's RunFailed or InternalError, not Ray's wrapping of it
    finally:
        progress.close()
        record.timings["inference_s"] = round(record.timings.get("inference_s", 0) + time.monotonic() - started, 3)
    record.tasks_per_node = cluster.tasks_per_node(dataset)
    return conflicts


def _note_stages(record: RunRecord, reporter: metrics.Reporter) -> None:
    """The run's seconds per stage and the model actors' busy share, into its record; the clock goes."""
    try:
        record.stage_seconds, busy = reporter.stage_seconds()
    finally:
        reporter.close()
    inference_s = record.timings.get("inference_s")
    if record.model_actors and inference_s:
        record.model_busy = round(min(1.0, busy / (record.model_actors * inference_s)), 3)


def _fault() -> tuple[str, int] | None:
    value = os.environ.get(FAULT)
    if not value:
        return None
    point, _, n = value.partition(":")
    return point, int(n)


def _die() -> None:
    sys.stderr.flush()
    os.killpg(os.getpgrp(), signal.SIGKILL)


@contextlib.contextmanager
def _heartbeat(layout: OutputLayout, record: RunRecord) -> Iterator[None]:
    """Rewrite the live record every HEARTBEAT_S seconds, so other runs can tell it is alive."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):
                records.write(layout.runs, record)

    thread = threading.Thread(target=beat, name="run-record-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _fail(layout: OutputLayout, record: RunRecord, exc: BaseException) -> None:
    """The run stops: its uncommitted files go, its record says why and what committed."""
    with contextlib.suppress(Exception):
        recovery.sweep(layout, record.run_id, record.run_date)
    record.status = records.FAILED
    record.error = storage.redact(str(exc)) or type(exc).__name__
    record.finished_at = records.now()
    with contextlib.suppress(Exception):
        records.write(layout.runs, record)


def _finish(layout: OutputLayout, record: RunRecord, started: float, *, write: bool = True) -> RunRecord:
    record.finished_at = records.now()
    record.timings["total_s"] = round(time.monotonic() - started, 3)
    if write:
        records.write(layout.runs, record)
    return record


def _safe_config(config: RunConfig) -> dict:
    values = config.to_record()
    values["inputs"] = [storage.redact_uri(u) for u in config.inputs]
    values["output"] = storage.redact_uri(config.output)
    for name in ("weights", "audio_weights", "address"):
        if values.get(name):
            values[name] = storage.redact_uri(values[name])
    return values


def _versions() -> dict[str, str]:
    names = ("ghostnet-pipeline", "torch", "ray", "pyarrow", "deltalake", "pillow", "soundfile", "soxr")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found

