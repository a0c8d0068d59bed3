"""What ``run``, ``nightly`` and ``demo`` print on stdout: a finished run's summary, or with
``--dry-run`` the plan of what a run would do."""

from __future__ import annotations

import dataclasses
import json

from pipeline.kinds import Modality
from pipeline.record import RunRecord
from pipeline.run import PlanSummary

__all__ = ["print_plan", "print_summary"]


def print_summary(record: RunRecord, output: str) -> None:
    if record.error and record.status == "committed":  # nothing was left to do
        print(record.error)
        return
    if record.items == 0:
        print(f"nothing to label: all {record.items_listed} items are already labeled by this model and weights"
              if record.items_listed else f"nothing to label: the inputs hold no {' or '.join(Modality)} files")
        _print_not_items(record)
        return
    statuses = " · ".join(f"{k} {v}" for k, v in record.rows_per_status.items())
    print(f"committed run {record.run_id} to {output}")
    print(f"  items:  {record.items} labeled ({record.items_listed} listed, {record.items_skipped} already labeled"
          f"{f', {record.duplicates} duplicates dropped' if record.duplicates else ''})")
    print(f"  shards: {record.shards_committed} of {record.shards_total} committed")
    _print_model_counts(record)
    print(f"  rows:   {record.rows} ({statuses})")
    print(f"  speed:  {record.items_per_s:.1f} items/s, {record.timings.get('total_s', 0):.1f} s elapsed")
    if record.stage_seconds:
        print(f"  time:   {_stage_line(record)}")
    _print_not_items(record)
    print(f"  output: {output} (run record: _runs/{record.run_id}.json)")


def _stage_line(record: RunRecord) -> str:
    """Seconds of work per stage, the model actors' busy share and what bound the run."""
    stages = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in record.stage_seconds.items())
    busy = "" if record.model_busy is None else f"; model actors busy {record.model_busy:.0%}"
    return f"{stages}{busy}" + (f" ({record.bound}-bound)" if record.bound else "")


def _print_not_items(record: RunRecord) -> None:
    if record.not_items:
        skipped = ", ".join(f"{ext} {n}" for ext, n in record.not_items.items())
        print(f"  not items (no row): {sum(record.not_items.values())} files ({skipped})")


def _print_models(s: PlanSummary) -> None:
    groups = max(m.decode_group for m in s.models) + 1
    print(f"  models:          {len(s.models)}, {groups} decode {'group' if groups == 1 else 'groups'} "
          "(models of a group share one decode)")
    for m in s.models:
        role = f", {m.role}" if m.role else ""
        print(f"    {m.model}@{m.weights_sha256[:12]}{role}: group {m.decode_group}, {m.to_label} to label, "
              f"{m.already_labeled} already labeled")


def _print_model_counts(record: RunRecord) -> None:
    if len(record.models) > 1:
        for m in record.models:
            role = f", {m.role}" if m.role else ""
            print(f"  model:  {m.model}@{m.weights_sha256[:12]}{role}: {m.items} items labeled "
                  f"({m.items_skipped} already labeled), {m.rows} rows")


def print_plan(summaries: list[PlanSummary], fmt: str) -> None:
    if fmt == "json":
        plans = [dataclasses.asdict(s) for s in summaries]
        print(json.dumps(plans[0] if len(plans) == 1 else {"plans": plans}, indent=2))
        return
    for s in summaries:
        print(f"plan ({s.modality}, {s.model}, weights {s.weights_sha256[:16]}) for {s.output}")
        print(f"  listed:          {s.objects_listed} objects, {s.items_listed} items"
              f"{f' ({s.duplicates} duplicates dropped)' if s.duplicates else ''}")
        if s.not_items:
            print(f"  not items:       {', '.join(f'{k} {v}' for k, v in s.not_items.items())}")
        print(f"  already labeled: {s.already_labeled}{' (by every model)' if len(s.models) > 1 else ''}")
        if s.nothing_because:
            print(f"  nothing to do:   {s.nothing_because}")
        print(f"  to label:        {s.to_label} in {s.shards} shards of at most {s.shard_size}")
        if len(s.models) > 1:
            _print_models(s)
        print(f"  estimated:       {s.estimated_files} files, {s.estimated_bytes / 2**20:.1f} MiB")
        print(f"  planned in:      {s.list_s:.1f} s listing, {s.diff_s:.1f} s diff")
    print("dry run: nothing was started or written")
