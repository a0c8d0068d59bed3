"""The Ray Data plan of a run, as the data flows:

read shards (driver's node) -> decode (tasks on every node) -> GhostNet (actor pool)
-> write Parquet (tasks) -> manifests back to the driver.

:class:`RayEngine` is a run's engine (:class:`pipeline.run.Engine`): the plan above for each round
of shards, with the run's progress line and metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import ray
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

import ghostnet
from pipeline import cluster, kinds, plan, sink
from pipeline.commit import CommitOutcome, RunIdentity
from pipeline.config import RunConfig, default_batch_size
from pipeline.fencing import Attempt
from pipeline.metrics import Reporter
from pipeline.model import ModelSpec
from pipeline.plan import Plan, ShardPlan
from pipeline.predict import ModelStage
from pipeline.progress import Progress
from pipeline.runstate import RunState
from pipeline.tables import OutputLayout

__all__ = ["Placement", "RayEngine", "ShardSource", "build", "placement"]

log = logging.getLogger("ghostnet_pipeline")

DECODE_TASK_MEMORY = 768 * 2**20  # Ray measured decode workers at up to 570 MiB and warns below that
READ_CONCURRENCY = 2  # shards read at once
WRITE_TASK_CPUS = 0  # writing is short and mostly waits on storage: it must not wait for a core
ITEM_BYTES = 128  # an item row of the shard files, roughly


class ShardSource(Datasource):
    """The planned shards, each one read task. The shard files are on the driver's local disk, so
    the reads run on the driver's node."""

    def __init__(self, shards: tuple[ShardPlan, ...], block_rows: int) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Ray's Datasource.__init__ is unannotated
        self.shards, self.block_rows = shards, block_rows

    @property
    def supports_distributed_reads(self) -> bool:
        return False

    def estimate_inmemory_data_size(self) -> int:
        return sum(s.items for s in self.shards) * ITEM_BYTES

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: object | None = None) -> list[ReadTask]:
        return [ReadTask(_reader(s.path, self.block_rows),
                         BlockMetadata(num_rows=s.items, size_bytes=s.items * ITEM_BYTES, input_files=None,
                                       exec_stats=None))
                for s in self.shards]


def _reader(path: str, block_rows: int) -> Callable[[], Iterator[pa.Table]]:
    return lambda: plan.read_shard(path, block_rows)


def configure_data_context() -> None:
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the run shows its own progress, per committed shard
    # A stage's RunFailed or InternalError reaches the driver as itself (inside Ray's RayTaskError),
    # not as a UserCodeException that keeps only its text.
    ctx.raise_original_map_exception = True


@dataclass(frozen=True)
class Placement:
    """The model actors: how many, and the GPUs each asks for."""

    actors: int
    gpus_per_actor: float


def placement(config: RunConfig, items: int) -> Placement:
    """The model actors for a run of ``items``: never more, unless --actors says so, than it has
    model batches to give them (a small run would start actors it cannot use)."""
    gpus_per_actor = config.gpus_per_actor
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if cluster.cluster_gpus() else 0.0
    if config.actors:
        return Placement(config.actors, gpus_per_actor)
    batches = -(-items // (config.batch_size or default_batch_size(on_gpu=gpus_per_actor > 0)))
    return Placement(max(1, min(_default_actors(gpus_per_actor, config.actor_resources), batches)), gpus_per_actor)


def build(config: RunConfig, models: list[tuple[ModelSpec, ghostnet.ModelMeta]], planned: Plan,
          layout: OutputLayout, identity: RunIdentity, attempt: Attempt, *, placed: Placement | None = None,
          reporter: Reporter | None = None) -> ray.data.Dataset:
    """The run's Ray Data plan for ``models`` (those of ``config.models``, in order); ``reporter``
    goes to every stage, which reports its part."""
    configure_data_context()
    placed = placed or placement(config, planned.items)
    actors, gpus_per_actor = placed.actors, placed.gpus_per_actor
    batch_size = config.batch_size or default_batch_size(on_gpu=gpus_per_actor > 0)
    block_rows = max(1, min(config.decode_batch_size * 4, -(-planned.items // (4 * actors))))
    on_device = kinds.kind_of(config.modality).front_end().device_decode and (
        config.decode == "device" or (config.decode == "auto" and gpus_per_actor > 0)
    )
    metas = [meta for _, meta in models]
    groups = kinds.decode_groups(config.modality, metas)
    first_of_group = [metas[groups.index(g)] for g in range(max(groups) + 1)]
    decode_fn, decode_kwargs = kinds.kind_of(config.modality).decoder()(config, first_of_group, on_device=on_device)
    decode_kwargs["reporter"] = reporter
    dataset: ray.data.Dataset = (
        ray.data.read_datasource(ShardSource(planned.shards, block_rows),
                                 concurrency=min(READ_CONCURRENCY, len(planned.shards)), num_cpus=0)
        .map_batches(
            decode_fn,
            fn_kwargs=decode_kwargs,
            batch_size=config.decode_batch_size,
            batch_format="pyarrow",
            num_cpus=1,
            # Reserving memory for a batch of decoded images also keeps Ray from fusing decode
            # into the model actor, so decoding runs as tasks on every CPU, beside the actors.
            memory=DECODE_TASK_MEMORY,
            # Every block starts on the driver's node (the shards are read there): spread the
            # decoding over the nodes instead of following the blocks.
            ray_remote_args_fn=_spread,
        )
        .map_batches(
            ModelStage,
            fn_constructor_args=([spec for spec, _ in models],),
            fn_constructor_kwargs={
                "groups": groups,
                "topk": [config.topk_of(entry) for entry in config.models],
                "embeddings": [config.embeddings_of(entry) for entry in config.models],
                "run_id": identity.run_id,
                "torch_threads": config.torch_threads or (None if gpus_per_actor else 1),
                "decode_on_device": on_device,
                "max_pixels": config.max_pixels,
                "compile": config.compile,
                "engine_name": config.engine,
                "batch_size": batch_size,
                "reporter": reporter,
            },
            compute=ray.data.ActorPoolStrategy(size=actors),
            batch_size=batch_size,
            batch_format="pyarrow",
            num_gpus=gpus_per_actor,
            num_cpus=config.cpus_per_actor if config.cpus_per_actor is not None else (
                1.0 if gpus_per_actor else CPU_ACTOR_CPUS),
            resources=config.actor_resources,
        )
        .map_batches(
            sink.write_files,
            fn_kwargs={"table_uri": layout.table("predictions"), "run_id": identity.run_id,
                       "attempt": attempt.token, "run_date": identity.run_date,
                       "digests": {s.index: s.digest for s in planned.shards},
                       "row_group_size": config.row_group_size, "reporter": reporter},
            # A shard commits once all its files are written: never wait for more rows than it has.
            batch_size=min(config.rows_per_file, config.shard_size),
            batch_format="pyarrow",
            num_cpus=WRITE_TASK_CPUS,
        )
    )
    return dataset


class RayEngine:
    """A run's shards through the Ray Data plan of :func:`build`, round after round, with the run's
    progress line and its metrics (:class:`pipeline.metrics.Reporter`)."""

    def __init__(self, config: RunConfig, models: list[tuple[ModelSpec, ghostnet.ModelMeta]], layout: OutputLayout,
                 run_id: str) -> None:
        self.config, self.models, self.layout = config, models, layout
        self.reporter = Reporter.start(run_id)
        self.progress: Progress | None = None

    @classmethod
    def starter(cls, config: RunConfig, models: list[tuple[ModelSpec, ghostnet.ModelMeta]],
                layout: OutputLayout) -> Callable[[str, float, float], RayEngine]:
        """``models``: each model of ``config.models``, checked (spec pinned, metadata)."""
        def start(run_id: str, listing_s: float, plan_s: float) -> RayEngine:
            engine = cls(config, models, layout, run_id)
            engine.reporter.stage("listing", listing_s)
            engine.reporter.stage("plan", plan_s)
            return engine
        return start

    def stream(self, planned: Plan, identity: RunIdentity, attempt: Attempt, state: RunState) -> Iterator[pa.Table]:
        placed = placement(self.config, planned.items)
        state.placed(placed.actors)
        self.reporter.planned(items=planned.items, shards=len(planned.shards), actors=placed.actors)
        self.progress = Progress(shards=len(planned.shards), items=planned.items, run_id=identity.run_id)
        started = time.monotonic()
        keep = [i for i, (spec, _) in enumerate(self.models) if spec.model_identity() in identity.models]
        config = self.config if len(keep) == len(self.models) else self.config.keeping_models(keep)
        state.grouped(kinds.decode_groups(config.modality, [self.models[i][1] for i in keep]))
        dataset = build(config, [self.models[i] for i in keep], planned, self.layout, identity, attempt,
                        placed=placed, reporter=self.reporter)
        try:
            yield from dataset.iter_batches(batch_size=None, batch_format="pyarrow")
        finally:
            self.progress.close()
            state.timed("inference_s", time.monotonic() - started)
        state.ran_on(cluster.tasks_per_node(dataset))

    def committed(self, outcome: CommitOutcome) -> None:
        shard = outcome.record
        if shard is None or self.progress is None:
            return
        self.progress.committed(shard)
        self.reporter.shard_committed(items=shard.items, rows_per_status=shard.rows_per_status,
                                      commit_s=shard.commit_s, items_per_s=self.progress.rate,
                                      eta_s=self.progress.remaining)

    def close(self, state: RunState) -> None:
        """The run's seconds per stage and the model actors' busy share, into its record; the clock goes."""
        try:
            seconds, busy = self.reporter.stage_seconds()
            state.stages(seconds, busy)
        except Exception as exc:  # noqa: BLE001 - the breakdown is a report, not a result: a run never fails on it
            log.warning("could not read the run's stage breakdown: %s", exc)
        finally:
            self.reporter.close()


# On a CPU-only cluster the model actors and the decode tasks share the cores. Decoding a 500x375
# JPEG costs about 7 ms of a core and ghostnet_100 about 24 ms (bench/RESULTS.md), so three quarters
# of the cores get a single-threaded actor, each reserving half a CPU: Ray then still schedules
# decode tasks beside them, and the OS shares the cores (Ray's CPUs only place work).
CPU_MODEL_SHARE = 0.75
CPU_ACTOR_CPUS = 0.5


def _spread() -> dict[str, str]:
    return {"scheduling_strategy": "SPREAD"}


def _default_actors(gpus_per_actor: float, resources: dict[str, float] | None) -> int:
    """As many actors as the scarcest resource they ask for allows; where they ask only for CPUs,
    one for each core of :data:`CPU_MODEL_SHARE` of the cluster's."""
    available: dict[str, float] = ray.cluster_resources()
    wanted = {**(resources or {}), **({"GPU": gpus_per_actor} if gpus_per_actor else {})}
    missing = sorted(name for name in wanted if available.get(name, 0) < wanted[name])
    if missing:
        log.warning(
            "no node of this Ray cluster offers %s for the model actors yet: one actor waits for an autoscaler "
            "to add such a node (start nodes with those resources, or change --actor-resources / --gpus-per-actor)",
            ", ".join(missing),
        )
        return 1
    if not wanted:
        return max(1, round(available.get("CPU", 1) * CPU_MODEL_SHARE))
    return max(1, min(int(available[name] // amount) for name, amount in wanted.items()))


