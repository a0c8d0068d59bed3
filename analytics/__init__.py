"""Reading what the pipeline committed: for analysts, notebooks and the ``query`` and ``report`` commands.

Depends on :mod:`pipeline` (layout, schema, run records); nothing in :mod:`pipeline` imports it.
DuckDB, matplotlib and pandas are the ``analytics`` extra (``pip install 'ghostnet-pipeline[analytics]'``):
cluster nodes do not need them, so they are imported only where used, through :func:`require`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from pipeline.errors import UsageError

EXTRA = "pip install 'ghostnet-pipeline[analytics]'"


def require(module: str) -> ModuleType:
    """``module``, imported; where a package of the analytics extra is missing, a UsageError that
    says which and how to install it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] not in ("duckdb", "matplotlib", "pandas"):
            raise
        raise UsageError(f"{exc.name} is not installed here; queries, reports, the drift alert and "
                         f"DataFrames need the analytics extra: {EXTRA}") from None


from analytics.output import Output, QueryResult, Selection  # noqa: E402 - after require, which it uses

__all__ = ["EXTRA", "Output", "QueryResult", "Selection", "require"]
