"""Committed runs made without a model: real schema, the pipeline's own commit path, made-up values."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa

from pipeline import commit
from pipeline import record as records
from pipeline.commit import RunIdentity
from pipeline.delta import open_tables
from pipeline.fencing import Attempt
from pipeline.record import SCORE_BINS, RunRecord, ShardRecord
from pipeline.schema import CHANNEL_STATS, PREDICTIONS
from pipeline.tables import OutputLayout

MODEL = "ghostnet_050"
WEIGHTS = "random-seed-0"
LABELS = ("cat", "dog", "ship", "tree")
START = datetime(2026, 11, 27, 2, 0, tzinfo=timezone.utc)


def predictions(run_id: str, statuses: dict[str, int], *, model: str = MODEL, weights: str = WEIGHTS,
                prefix: str = "s3://photos/in", seed: int = 0) -> pa.Table:
    """One row per item: ``statuses`` maps a status to how many items get it."""
    rng = np.random.default_rng(seed)
    rows = []
    for status, n in statuses.items():
        for i in range(n):
            ok = status == "ok"
            scores = sorted(rng.dirichlet(np.ones(len(LABELS))).tolist(), reverse=True) if ok else None
            ids = rng.permutation(len(LABELS)).tolist() if ok else None
            rows.append({
                "uri": f"{prefix}/{status}-{i:03d}.jpg", "etag": f"e{i}", "size_bytes": 1000 + i,
                "modality": "image", "segment": 0, "status": status,
                "error": None if ok else f"{status}: cannot use this item",
                "label": LABELS[ids[0]] if ok else None, "score": scores[0] if ok else None,
                "topk_ids": ids, "topk_labels": [LABELS[k] for k in ids] if ok else None,
                "topk_scores": scores,
                "channel_weights": [{"layer": "blocks.1.0.se", "mean": 0.5, "std": 0.1, "min": 0.1,
                                     "max": 0.9, "entropy": 2.0}] if ok else None,
                "model": model, "weights_sha256": weights, "run_id": run_id,
                "processed_at": START,
            })
    return pa.Table.from_pylist(rows, schema=PREDICTIONS)


def channel_stats(run_id: str, means: dict[str, np.ndarray], *, count: int = 10, model: str = MODEL,
                  weights: str = WEIGHTS, std: float = 0.05) -> pa.Table:
    """One shard's sums whose mean and std are ``means`` and ``std``."""
    rows = [
        {"run_id": run_id, "shard": 0, "model": model, "weights_sha256": weights, "layer": layer, "channel": c,
         "count": count, "sum": float(m) * count, "sum_sq": (std * std + float(m) ** 2) * count,
         "mean": float(m), "std": std, "min": 0.0, "max": 1.0}
        for layer, vector in means.items()
        for c, m in enumerate(vector)
    ]
    return pa.Table.from_pylist(rows, schema=CHANNEL_STATS)


def commit_run(root: str, run_id: str, rows: pa.Table, stats: pa.Table, *, minutes: int = 0,
               run_date: str = "2026-11-27", model: str = MODEL, weights: str = WEIGHTS,
               stages: dict[str, float] | None = None, model_actors: int = 0,
               model_busy: float | None = None) -> RunRecord:
    """Write ``rows`` and ``stats`` as one shard and commit them with the pipeline's own commit path.
    The record holds the ok rows per label and score bin, and ``stages`` as its stage breakdown."""
    layout = OutputLayout.of(root)
    identity = RunIdentity.single(run_id, run_date, model, weights, reprocess=True)
    tables_ = open_tables(layout)
    written = commit.write_and_commit(layout, tables_, identity, Attempt.new(run_id), shard=0, digest="0" * 16,
                                      rows=rows, stats=stats)
    per_status = {s: n for s, n in zip(*np.unique(rows["status"].to_numpy(zero_copy_only=False),
                                                  return_counts=True), strict=True)}
    ended = (START + timedelta(minutes=minutes)).isoformat()
    record = RunRecord(
        run_id=run_id, kind="run", run_date=run_date, status=records.COMMITTED, model=model, weights="random",
        weights_sha256=weights, modality="image", labels=len(LABELS), inputs=["s3://photos/in"],
        items_listed=rows.num_rows, items=rows.num_rows, rows=rows.num_rows,
        rows_per_status={str(k): int(v) for k, v in per_status.items()}, top_errors=top_errors(rows),
        timings={"plan_s": 0.2, "inference_s": 4.0, "total_s": 5.0}, items_per_s=rows.num_rows / 4.0,
        stage_seconds=stages or {}, model_actors=model_actors, model_busy=model_busy,
        label_counts=label_counts(rows), score_histogram=score_histogram(rows),
        shards_total=1, shards_committed=1, config={"batch_size": 32, "topk": 4}, versions={"duckdb": "2.0.1"},
        started_at=ended, finished_at=ended,
        shards=[ShardRecord(shard=0, items=rows.num_rows, rows=rows.num_rows,
                            rows_per_status={str(k): int(v) for k, v in per_status.items()}, files=1,
                            bytes=written.size, written_s=4.0, commit_s=0.1, committed_at=ended)],
    )
    records.write(layout.runs, record)
    return record


def label_counts(rows: pa.Table) -> dict[str, int]:
    """What the pipeline records: ok rows per top-1 label."""
    labels = [r["label"] for r in rows.to_pylist() if r["status"] == "ok"]
    return {label: labels.count(label) for label in sorted(set(labels))}


def score_histogram(rows: pa.Table) -> list[int]:
    """What the pipeline records: ok rows per top-1 score bin, SCORE_BINS equal bins over [0, 1]."""
    scores = [r["score"] for r in rows.to_pylist() if r["status"] == "ok"]
    return [int(n) for n in np.histogram(scores, bins=SCORE_BINS, range=(0.0, 1.0))[0]]


def top_errors(rows: pa.Table) -> list[dict]:
    """What the pipeline records: the (status, error) pairs by count, with their first uri."""
    bad = [r for r in rows.to_pylist() if r["status"] != "ok"]
    groups: dict[tuple[str, str], list[str]] = {}
    for r in bad:
        groups.setdefault((r["status"], r["error"]), []).append(r["uri"])
    ranked = sorted(groups.items(), key=lambda g: -len(g[1]))
    return [{"status": s, "error": e, "count": len(uris), "uri": min(uris)} for (s, e), uris in ranked]


def gates(channels: dict[str, int], seed: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    """Per-layer mean gate vectors in (0, 1)."""
    rng = np.random.default_rng(seed)
    return {layer: 1 / (1 + np.exp(-scale * rng.normal(size=n))) for layer, n in channels.items()}


