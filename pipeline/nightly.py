"""The scheduled run: incremental, idempotent per date, resuming its date after a crash.

Two nightly runs of the same model and weights may run at once (a slow night and the next one, a
scheduler that fires twice): the table's transactions keep each item labeled once.
"""

from __future__ import annotations

from pipeline.config import RunConfig
from pipeline.record import RunRecord, validate_run_date
from pipeline.run import PlanSummary, plan_by_modality, run_by_modality


def nightly(config: RunConfig) -> list[RunRecord]:
    """Label what is new or changed since the committed runs of this model and weights, into
    ``run_date=config.run_date``. One record per modality labeled (``--modality auto`` may label two)."""
    return run_by_modality(config.replace(run_date=validate_run_date(config.run_date)), kind="nightly")


def nightly_plan(config: RunConfig) -> list[PlanSummary]:
    return plan_by_modality(config.replace(run_date=validate_run_date(config.run_date)), kind="nightly")
