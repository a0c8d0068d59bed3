"""What a run tells Prometheus, through Ray's metrics API (``ray.util.metrics``), and where its time goes.

Every process of a run reports its own part, and the Ray metrics agent of each node serves what the
processes on that node reported at ``http://NODE_IP:METRICS_EXPORT_PORT/metrics``:

- the driver: items and shards planned, rows committed per status, shards committed, items/s, ETA,
  the time of the last commit, seconds of listing, planning and committing;
- the decode tasks: seconds of fetching and decoding;
- the model actors: items per status, batch latency, busy seconds, GPU memory and utilization;
- the write tasks: seconds of writing.

Ray exports a metric named here ``ghostnet_pipeline_X`` as ``ray_ghostnet_pipeline_X``, and a counter
as ``ray_ghostnet_pipeline_X_total`` (measured with Ray 2.60; docs/operations.md lists every exported
name). Each series carries the ``run_id`` tag, and Ray adds ``WorkerId``, ``NodeAddress`` and
``SessionName``: sum over ``WorkerId`` for the run's total.

Ray 2.60 drops a gauge's series about two report intervals after a process last set it, so the
driver sets its gauges again every :data:`REFRESH_S` while the run goes (:class:`_DriverGauges`): a
scrape at any time of a run sees them, and they age out once it ended.

The run record needs the same per-stage seconds after the run, and Prometheus is not something a run
can read back; so the workers also add their seconds to a :class:`StageClock` actor of the run, which
the driver reads at the end (:meth:`Reporter.stage_seconds`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import ray
from ray.util import metrics

from pipeline.record import STAGES

if TYPE_CHECKING:
    import torch

__all__ = ["STAGES", "Reporter", "StageClock", "exported_names"]

PREFIX = "ghostnet_pipeline_"
ACTOR_BUSY = "actor_busy"  # seconds the model actors spent in their batches, device decoding included
REFRESH_S = 1.0  # the driver's gauges are set again this often (Ray's shortest report interval is 1 s)
BATCH_BOUNDARIES = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]

_COUNTERS = {
    "items": ("items (audio: windows) leaving the model actors, by status", ("status",)),
    "rows_committed": ("rows committed, by status", ("status",)),
    "items_committed": ("items committed", ()),
    "shards_committed": ("shards committed", ()),
    "stage_seconds": ("seconds of work per stage, summed over the processes doing it", ("stage",)),
    "actor_busy_seconds": ("seconds the model actors spent running batches", ()),
}
_GAUGES = {
    "items_planned": ("items the run set out to label", ()),
    "shards_planned": ("shards the run set out to commit", ()),
    "model_actors": ("model actors of the run", ()),
    "items_per_second": ("items committed per second since the run started inference", ()),
    "eta_seconds": ("seconds until the last shard commits, at the rate so far", ()),
    "last_commit_timestamp_seconds": ("Unix time of the run's latest shard commit", ()),
    "gpu_memory_used_bytes": ("GPU memory a model actor holds (reserved by torch)", ("device",)),
    "gpu_memory_total_bytes": ("GPU memory of the model actor's device", ("device",)),
    "gpu_utilization_ratio": ("fraction of the last sample period the GPU was busy (NVML), 0..1", ("device",)),
}


def exported_names() -> set[str]:
    """Every series name a Prometheus scrape shows for this module's metrics (Ray's ``ray_`` prefix,
    ``_total`` on counters, ``_bucket``/``_count``/``_sum`` of the histogram)."""
    names = {f"ray_{PREFIX}{name}_total" for name in _COUNTERS} | {f"ray_{PREFIX}{name}" for name in _GAUGES}
    return names | {f"ray_{PREFIX}batch_seconds_{part}" for part in ("bucket", "count", "sum")}


@cache
def _counter(name: str) -> metrics.Counter:
    description, tags = _COUNTERS[name]
    return metrics.Counter(PREFIX + name, description=description, tag_keys=("run_id", *tags))


@cache
def _gauge(name: str) -> metrics.Gauge:
    description, tags = _GAUGES[name]
    return metrics.Gauge(PREFIX + name, description=description, tag_keys=("run_id", *tags))


@cache
def _batch_seconds() -> metrics.Histogram:
    return metrics.Histogram(PREFIX + "batch_seconds", description="seconds a model actor took per batch",
                             boundaries=BATCH_BOUNDARIES, tag_keys=("run_id",))


class _DriverGauges:
    """The driver's gauges of one run, set again every :data:`REFRESH_S` until :meth:`close`."""

    def __init__(self, run_id: str) -> None:
        self.values: dict[str, float] = {}
        self.tags = {"run_id": run_id}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._refresh, name=f"gauges-{run_id}", daemon=True)
        self.thread.start()

    def set(self, name: str, value: float) -> None:
        with self.lock:
            self.values[name] = value
            _gauge(name).set(value, tags=self.tags)

    def _refresh(self) -> None:
        while not self.stop.wait(REFRESH_S):
            with self.lock:
                for name, value in self.values.items():
                    _gauge(name).set(value, tags=self.tags)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


_driver_gauges: dict[str, _DriverGauges] = {}  # by run id, on the driver only


@ray.remote(num_cpus=0)
class StageClock:
    """Seconds per stage of one run, added up from every worker."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds

    def totals(self) -> dict[str, float]:
        return dict(self.seconds)


@dataclass(frozen=True)
class Reporter:
    """One run's metrics; built on the driver and handed to the stages, where it reports their part.

    Without a running Ray (a benchmark calling a stage directly) it reports nothing.
    """

    run_id: str
    clock: Any = None  # a StageClock actor handle

    @classmethod
    def start(cls, run_id: str) -> Reporter:
        _driver_gauges[run_id] = _DriverGauges(run_id)
        return cls(run_id, StageClock.remote())  # type: ignore[attr-defined]  # ray.remote adds .remote

    def close(self) -> None:
        if (gauges := _driver_gauges.pop(self.run_id, None)) is not None:
            gauges.close()
        if self.clock is not None:
            ray.kill(self.clock)

    # --- every process -------------------------------------------------------------------------

    def stage(self, stage: str, seconds: float) -> None:
        """``seconds`` of work in ``stage`` (one of :data:`STAGES`) done."""
        if not ray.is_initialized():
            return
        _counter("stage_seconds").inc(seconds, tags={"run_id": self.run_id, "stage": stage})
        self._clock(stage, seconds)

    def _clock(self, key: str, seconds: float) -> None:
        if self.clock is not None:
            # Waited for, so that the totals the driver reads at the end hold every finished batch.
            ray.get(self.clock.add.remote(key, seconds))

    # --- model actors --------------------------------------------------------------------------

    def model_batch(self, seconds: float, statuses: Iterable[str], device: torch.device, *,
                    decode_s: float = 0.0) -> None:
        """A model actor finished a batch in ``seconds``, ``decode_s`` of them decoding on its device,
        its rows with these ``statuses``."""
        if not ray.is_initialized():
            return
        if decode_s:
            self.stage("decode", decode_s)
        self.stage("model", seconds - decode_s)
        tags = {"run_id": self.run_id}
        _batch_seconds().observe(seconds, tags=tags)
        _counter("actor_busy_seconds").inc(seconds, tags=tags)
        for status, count in Counter(statuses).items():
            _counter("items").inc(count, tags={**tags, "status": status})
        self._clock(ACTOR_BUSY, seconds)
        if device.type == "cuda":
            _report_gpu(self.run_id, device)

    # --- driver --------------------------------------------------------------------------------

    def planned(self, *, items: int, shards: int, actors: int) -> None:
        gauges = _driver_gauges[self.run_id]
        gauges.set("items_planned", items)
        gauges.set("shards_planned", shards)
        gauges.set("model_actors", actors)

    def shard_committed(self, *, items: int, rows_per_status: dict[str, int], commit_s: float,
                        items_per_s: float, eta_s: float | None) -> None:
        tags = {"run_id": self.run_id}
        for status, count in rows_per_status.items():
            if count:
                _counter("rows_committed").inc(count, tags={**tags, "status": status})
        if items:
            _counter("items_committed").inc(items, tags=tags)
        _counter("shards_committed").inc(1, tags=tags)
        gauges = _driver_gauges[self.run_id]
        gauges.set("items_per_second", items_per_s)
        if eta_s is not None:
            gauges.set("eta_seconds", eta_s)
        gauges.set("last_commit_timestamp_seconds", time.time())
        self.stage("commit", commit_s)

    def stage_seconds(self) -> tuple[dict[str, float], float]:
        """The run's seconds per stage (:data:`STAGES` that had any) and the model actors' busy seconds."""
        totals = ray.get(self.clock.totals.remote()) if self.clock is not None else {}
        stages = {s: round(totals[s], 3) for s in STAGES if s in totals}
        return stages, round(totals.get(ACTOR_BUSY, 0.0), 3)


def _report_gpu(run_id: str, device: torch.device) -> None:
    import torch

    tags = {"run_id": run_id, "device": str(device)}
    _gauge("gpu_memory_used_bytes").set(torch.cuda.memory_reserved(device), tags=tags)
    _gauge("gpu_memory_total_bytes").set(torch.cuda.get_device_properties(device).total_memory, tags=tags)
    try:
        utilization = torch.cuda.utilization(device)  # needs NVML (pynvml); absent: no series
    except Exception:  # noqa: BLE001 - no NVML here: the series is left out, not faked
        return
    _gauge("gpu_utilization_ratio").set(utilization / 100, tags=tags)
