"""One labeling run, top to bottom as the data flows:

discover -> skip what is labeled -> read + decode (Ray tasks) -> GhostNet (actor pool)
-> Parquet in staging -> check every item is there once -> commit.

A run labels one modality with one model. ``--modality auto`` is :func:`run_by_modality`: the
items are listed once, split by extension, and each modality is a run of its own (own run id
and commit record) in the same Ray session.
"""

from __future__ import annotations

import logging
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata

import pyarrow as pa
import pyarrow.compute as pc
import ray

import ghostnet
from pipeline import audio, cluster, commit, decode, discover, incremental, storage
from pipeline.commit import Layout
from pipeline.config import RunConfig
from pipeline.predict import ModelSpec, Predictor
from pipeline.schema import Status

log = logging.getLogger("ghostnet_pipeline")

# Ray measured decode workers at up to 570 MiB (Python, torch and a batch of images); it warns below that.
DECODE_TASK_MEMORY = 768 * 2**20
MAX_INPUT_BLOCKS = 10_000


class RunFailed(RuntimeError):
    """The run finished without committing; the message says why and what to do."""


@dataclass
class RunResult:
    run_id: str
    output: str
    committed: bool
    message: str
    items_listed: int = 0
    items: int = 0
    rows: int = 0
    rows_per_status: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    items_per_s: float = 0.0
    record: dict = field(default_factory=dict)


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def resolve_model(config: RunConfig) -> tuple[ModelSpec, ghostnet.ModelMeta]:
    """Check the weights on the driver (digest, shapes) before anything is scheduled."""
    shape = {"num_classes": config.num_classes, "modality": config.modality}
    if config.weights in (None, "random"):
        spec = ModelSpec(config.model, "random", seed=config.seed, **shape)
        return spec, spec.load().meta
    unpinned = ModelSpec(config.model, config.weights, config.weights_sha256, **shape)
    model = unpinned.load()
    # Actors load the file again themselves; pinning its digest makes them refuse a file that
    # changed after this check.
    spec = ModelSpec(config.model, config.weights, model.weights_sha256, **shape)
    return spec, model.meta


def run_by_modality(config: RunConfig, *, kind: str = "run") -> list[RunResult]:
    """``run(config)``, or for ``--modality auto`` one run per modality found, in one Ray session.

    Each modality's run is a normal single-model run (``config.for_modality``), so every commit
    record names one model and one weights digest. Images run first.
    """
    if config.modality != "auto":
        return [run(config, kind=kind)]
    listed = discover.discover(config.inputs, modality="auto")
    parts = [(m, listed.filter(pc.equal(listed["modality"], m))) for m in ("image", "audio")]
    parts = [(m, items) for m, items in parts if items.num_rows]
    if not parts:
        return [run(config.for_modality("image"), kind=kind, listed=listed)]
    configs = [(config.for_modality(m), items) for m, items in parts]
    with cluster.connect(config.address, num_cpus=config.num_cpus):
        return [run(c, kind=kind, listed=items) for c, items in configs]


def run(config: RunConfig, *, kind: str = "run", listed: pa.Table | None = None) -> RunResult:
    """Label every item named by ``config.inputs`` that this model has not labeled yet.

    ``kind="nightly"`` makes the run idempotent per date: when a nightly run of this model
    and weights is already committed for ``config.run_date``, nothing is done. ``listed``
    (a :func:`pipeline.discover.discover` table) skips listing the inputs again.
    """
    if config.modality not in ("image", "audio"):
        raise ValueError(f"a run labels one modality, got {config.modality!r}; use run_by_modality for auto")
    started = time.monotonic()
    timings: dict[str, float] = {}
    run_id = commit.validate_run_id(config.run_id or new_run_id())
    run_date = commit.validate_run_date(config.run_date)
    layout = Layout(config.output.rstrip("/"))
    for finished in commit.recover(layout):
        log.warning("finished committing run %s, which an earlier driver left half published", finished)

    t = time.monotonic()
    if listed is None:
        listed = discover.discover(config.inputs, modality=config.modality)
    timings["discover_s"] = time.monotonic() - t

    t = time.monotonic()
    spec, meta = resolve_model(config)
    timings["model_check_s"] = time.monotonic() - t
    if spec.is_random:
        log.warning("using random weights (seed %d): predictions are meaningless", spec.seed)

    if kind == "nightly":
        night = _committed_night(layout, run_date, spec)
        if night:
            return RunResult(run_id, config.output, False,
                             f"night {run_date} is already committed by run {night}: nothing to add",
                             items_listed=listed.num_rows)

    items = listed
    if not config.reprocess:
        done = incremental.labeled(layout, model=spec.name, weights_sha256=spec.provenance())
        items = incremental.unlabeled(listed, done)
    skipped = listed.num_rows - items.num_rows
    if items.num_rows == 0:
        message = (
            f"nothing to label: all {listed.num_rows} items are already labeled by this model and weights"
            if listed.num_rows
            else "nothing to label: the inputs hold no image or audio files"
        )
        return RunResult(run_id, config.output, False, message, items_listed=listed.num_rows)

    t = time.monotonic()
    with cluster.connect(config.address, num_cpus=config.num_cpus) as where:
        log.info("running on %s", where)
        plan = _plan(config, spec, meta, items, layout, run_id)
        _execute(plan, config, layout, run_id)
        placement = cluster.tasks_per_node(plan)
    timings["inference_s"] = time.monotonic() - t

    t = time.monotonic()
    staged = commit.read_staged(layout, run_id, ["uri", "segment", "status", "error"])
    rows_per_status = _count(staged["status"])
    try:
        _check_error_rate(staged, items.num_rows, config.max_error_rate)
        commit.check_exactly_once(staged, items)
    except (RunFailed, commit.CommitError):
        storage.remove_tree(layout.staging(run_id))
        raise
    stats = commit.reduce_partials(layout, run_id, model=spec.name, weights_sha256=spec.provenance())
    timings["commit_s"] = time.monotonic() - t  # checks and statistics; the publish renames follow
    record = {
        "run_id": run_id,
        "kind": kind,
        "run_date": run_date,
        "status": "committed",
        "committed_at": datetime.now(timezone.utc).isoformat(),
        "model": spec.name,
        "weights": storage.redact_uri(config.weights or "random"),
        "weights_sha256": spec.provenance(),
        "modality": config.modality,
        "labels": len(meta.labels),
        "inputs": [storage.redact_uri(u) for u in config.inputs],
        "items_listed": listed.num_rows,
        "items_skipped": skipped,
        "items": items.num_rows,
        "rows": staged.num_rows,
        "rows_per_status": rows_per_status,
        "top_errors": _top_errors(staged),
        "timings": timings,
        "items_per_s": items.num_rows / timings["inference_s"],
        "tasks_per_node": placement,
        "config": _safe_config(config),
        "versions": _versions(),
    }
    record = commit.publish(layout, run_id, run_date, stats, record)
    elapsed = time.monotonic() - started
    return RunResult(
        run_id,
        config.output,
        True,
        f"committed run {run_id}",
        items_listed=listed.num_rows,
        items=items.num_rows,
        rows=staged.num_rows,
        rows_per_status=rows_per_status,
        elapsed_s=elapsed,
        items_per_s=items.num_rows / elapsed,
        record=record,
    )


def _committed_night(layout: Layout, run_date: str, spec: ModelSpec) -> str | None:
    for record in commit.committed_runs(layout):
        if (record.get("kind") == "nightly" and record.get("run_date") == run_date
                and record.get("model") == spec.name and record.get("weights_sha256") == spec.provenance()):
            return record["run_id"]
    return None


def _plan(config, spec, meta, items: pa.Table, layout: Layout, run_id: str) -> ray.data.Dataset:
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = sys.stderr.isatty()
    gpus_per_actor = config.gpus_per_actor
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if cluster.cluster_gpus() else 0.0
    actors = config.actors or _default_actors(gpus_per_actor, config.actor_resources)
    batch_size = config.batch_size or (256 if gpus_per_actor else 32)
    block_rows = max(1, min(config.decode_batch_size * 4, -(-items.num_rows // (4 * actors))))
    # Millions of items: bigger blocks, so the driver does not put a million tiny tables in the object store.
    block_rows = max(block_rows, -(-items.num_rows // MAX_INPUT_BLOCKS))
    blocks = [items.slice(i, block_rows) for i in range(0, items.num_rows, block_rows)]
    on_device = meta.modality == "image" and (
        config.decode == "device" or (config.decode == "auto" and gpus_per_actor > 0)
    )
    decode_fn, decode_kwargs = _decode_stage(config, meta, on_device)
    return (
        ray.data.from_arrow(blocks)
        .map_batches(
            decode_fn,
            fn_kwargs=decode_kwargs,
            batch_size=config.decode_batch_size,
            batch_format="pyarrow",
            num_cpus=1,
            # Reserving memory for a batch of decoded images also keeps Ray from fusing decode
            # into the model actor, so decoding runs as tasks on every CPU, beside the actors.
            memory=DECODE_TASK_MEMORY,
        )
        .map_batches(
            Predictor,
            fn_constructor_args=(spec,),
            fn_constructor_kwargs={
                "run_id": run_id,
                "partials_uri": layout.staged_partials(run_id),
                "topk": config.topk,
                "embeddings": config.embeddings,
                "torch_threads": config.torch_threads,
                "decode_on_device": on_device,
                "max_pixels": config.max_pixels,
                "compile": config.compile,
                "batch_size": batch_size,
            },
            compute=ray.data.ActorPoolStrategy(size=actors),
            batch_size=batch_size,
            batch_format="numpy",
            num_gpus=gpus_per_actor,
            num_cpus=config.cpus_per_actor,
            resources=config.actor_resources,
        )
    )


def _default_actors(gpus_per_actor: float, resources: dict[str, float] | None) -> int:
    """As many actors as the scarcest resource they ask for allows; one where they ask only for CPUs."""
    available = ray.cluster_resources()
    wanted = {**(resources or {}), **({"GPU": gpus_per_actor} if gpus_per_actor else {})}
    missing = sorted(name for name in wanted if available.get(name, 0) < wanted[name])
    if missing:
        log.warning(
            "no node of this Ray cluster offers %s for the model actors yet: one actor waits for an autoscaler "
            "to add such a node (start nodes with those resources, or change --actor-resources / --gpus-per-actor)",
            ", ".join(missing),
        )
        return 1
    return max(1, min((int(available[name] // amount) for name, amount in wanted.items()), default=1))


def _decode_stage(config: RunConfig, meta: ghostnet.ModelMeta, on_device: bool) -> tuple[Callable, dict]:
    """The decode function for the model's modality and its keyword arguments."""
    if meta.modality == "audio":
        return audio.read_and_decode_audio, {"frontend": meta.audio}
    return decode.read_and_decode, {
        "meta": meta,
        "max_pixels": config.max_pixels,
        "max_file_bytes": config.max_file_bytes,
        "leave_jpegs": on_device,
    }


def _execute(plan: ray.data.Dataset, config: RunConfig, layout: Layout, run_id: str) -> None:
    plan.write_parquet(
        layout.staged_predictions(run_id),
        min_rows_per_file=config.rows_per_file,
        row_group_size=config.row_group_size,
        compression="zstd",
    )


def _count(status: pa.ChunkedArray) -> dict[str, int]:
    counts = pc.value_counts(status).to_pylist()
    return {c["values"]: c["counts"] for c in sorted(counts, key=lambda c: c["values"])}


def _bad_items(staged: pa.Table) -> pa.Table:
    bad = staged.filter(pc.not_equal(staged["status"], Status.OK.value))
    return bad.group_by(["uri"]).aggregate([("status", "min")])


def _check_error_rate(staged: pa.Table, items: int, max_rate: float) -> None:
    bad = _bad_items(staged)
    rate = bad.num_rows / items
    if rate > max_rate:
        kinds = ", ".join(f"{k}: {v}" for k, v in _count(bad["status_min"]).items())
        examples = "; ".join(f"{e['uri']} ({e['error']})" for e in _top_errors(staged)[:3])
        raise RunFailed(
            f"{bad.num_rows} of {items} items failed ({rate:.1%}), over --max-error-rate "
            f"{max_rate:.1%} ({kinds}); nothing was committed. Examples: {examples}. "
            "Fix the inputs, or raise --max-error-rate if this is expected."
        )


def _top_errors(staged: pa.Table, limit: int = 10) -> list[dict]:
    bad = staged.filter(pc.not_equal(staged["status"], Status.OK.value))
    if bad.num_rows == 0:
        return []
    grouped = bad.group_by(["status", "error"]).aggregate([("uri", "count"), ("uri", "min")])
    grouped = grouped.sort_by([("uri_count", "descending")]).slice(0, limit)
    return [
        {"status": r["status"], "error": r["error"], "count": r["uri_count"], "uri": r["uri_min"]}
        for r in grouped.to_pylist()
    ]


def _safe_config(config: RunConfig) -> dict:
    record = config.to_record()
    record["inputs"] = [storage.redact_uri(u) for u in config.inputs]
    record["output"] = storage.redact_uri(config.output)
    if config.weights:
        record["weights"] = storage.redact_uri(config.weights)
    if config.address:
        record["address"] = storage.redact_uri(config.address)
    return record


def _versions() -> dict[str, str]:
    names = ("ghostnet-pipeline", "torch", "ray", "pyarrow", "pillow", "soundfile", "soxr")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found
