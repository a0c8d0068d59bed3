"""The scheduled run: incremental, idempotent per date, resumable, never two at once."""

from __future__ import annotations

from pipeline import commit, lock, storage
from pipeline.config import RunConfig
from pipeline.run import RunResult, new_run_id, run_by_modality


def lock_uri(output: str) -> str:
    return storage.join(output.rstrip("/"), "_locks", "nightly.json")


def nightly(config: RunConfig, *, wait_s: float = 0.0) -> list[RunResult]:
    """Label what is new or changed since the committed runs, into ``run_date=config.run_date``.

    One result per modality labeled (``--modality auto`` may label two). Raises
    :class:`pipeline.lock.LockHeld` when another nightly run holds the output.
    """
    night = commit.validate_run_date(config.run_date)
    config = config.replace(run_id=config.run_id or f"nightly-{night}-{new_run_id().split('-')[-1]}")
    with lock.acquire(lock_uri(config.output), wait_s=wait_s):
        return run_by_modality(config, kind="nightly")
