"""The Ray Data pipeline: discover -> plan (shards) -> read + decode -> GhostNet actors -> Parquet -> commit.

The public surface is :data:`__all__`: what a job, a notebook or the CLI calls. Each module also
names its own surface in its ``__all__`` (``pipeline.run.run``, ``pipeline.nightly.nightly`` and
``pipeline.migrate.migrate`` keep their module's name, so they are not repeated here); the rest is
the pipeline's internals. Names here load on first use, so importing one module of the package
does not import Ray or torch.

    >>> from pipeline import RunConfig, run_by_modality                      # doctest: +SKIP
    >>> [record] = run_by_modality(RunConfig(inputs=("s3://photos/",), output="s3://labels/photos",
    ...                                      model="ghostnet_100", weights="s3://models/g.safetensors"))
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "RunConfig": "pipeline.config",
    "run_by_modality": "pipeline.run",
    "plan_by_modality": "pipeline.run",
    "PlanSummary": "pipeline.run",
    "nightly_plan": "pipeline.nightly",
    "RunRecord": "pipeline.record",
    "ShardRecord": "pipeline.record",
    "OutputLayout": "pipeline.tables",
    "PREDICTIONS": "pipeline.schema",
    "CHANNEL_STATS": "pipeline.schema",
    "Status": "pipeline.schema",
    "UsageError": "pipeline.errors",
    "RunFailed": "pipeline.errors",
    "InternalError": "pipeline.errors",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
