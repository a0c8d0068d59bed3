"""``ghostnet-pipeline run`` / ``python -m jobs.label``: an ad-hoc labeling run.

Exit codes: 0 committed (or nothing left to label), 1 failed (shards committed before the
failure stay committed; the same command again labels only the rest), 2 usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from jobs._command import Command
from pipeline.config import DECODERS, MODALITIES, RunConfig, load_toml
from pipeline.errors import UsageError
from pipeline.record import RunRecord
from pipeline.run import PlanSummary, plan_by_modality, run_by_modality

EXAMPLE = """example:
  ghostnet-pipeline run --input s3://photos/2026/ --output s3://labels/photos \\
      --model ghostnet_100 --weights s3://models/ghostnet_100.safetensors --topk 5
  ghostnet-pipeline run --input s3://media/ --output s3://labels/media --modality auto \
      --model ghostnet_100 --weights s3://models/ghostnet_100.safetensors \
      --audio-model ghostnetv2_100 --audio-weights s3://models/sounds.safetensors
"""

# flag name -> RunConfig field, where they differ
_FIELD = {"input": "inputs"}


def add_run_arguments(parser: argparse.ArgumentParser, *, nightly: bool = False) -> None:
    """The flags of ``run``, which ``nightly`` shares but for those that choose the run's date and
    what it labels again; every one can also come from --config."""
    add = parser.add_argument
    add("--input", action="append", metavar="URI",
        help="folder, prefix, glob (with *) or manifest (.txt/.csv/.parquet with a uri column); repeatable")
    add("--output", metavar="URI", help="where predictions, channel_stats and _runs/ live")
    add("--model", metavar="NAME", help="architecture, e.g. ghostnet_100 (list them: ghostnet-pipeline models)")
    add("--weights", metavar="URI|random",
        help="local path, fsspec URL (s3://...), hf-hub:org/name, or 'random' (seeded; smoke tests only)")
    add("--weights-sha256", metavar="HEX", help="refuse the weights unless their sha256 is this")
    add("--modality", choices=MODALITIES,
        help="image (default), audio (--model is the audio model), or auto: by extension, one run per modality")
    add("--audio-model", metavar="NAME", help="with --modality auto: the architecture for the audio files")
    add("--audio-weights", metavar="URI|random", help="with --modality auto: the audio model's weights")
    add("--audio-weights-sha256", metavar="HEX",
        help="with --modality auto: refuse the audio weights unless their sha256 is this")
    add("--decode", choices=DECODERS,
        help="where JPEGs are decoded: device (nvJPEG on the actor's GPU), cpu (Pillow in tasks), "
             "auto (default: device when actors have GPUs)")
    add("--batch-size", type=int, metavar="N", help="rows per model call (default 256 on GPU, 32 on CPU)")
    add("--decode-batch-size", type=int, metavar="N", help="items per decode task call (default 32)")
    add("--actors", type=int, metavar="N",
        help="model actors (default: one per GPU; without GPUs, one per core for 3/4 of the cores)")
    add("--gpus-per-actor", type=float, metavar="F", help="GPUs per actor (default 1 with GPUs, else 0)")
    add("--actor-resources", type=_resources, metavar="JSON",
        help='other Ray resources per actor, e.g. \'{"model_node": 1}\' to place actors on nodes started '
             'with --resources \'{"model_node": N}\' (default: one actor per unit of it)')
    add("--compile", action="store_true", default=None,
        help="torch.compile the model in each actor: faster batches after a start-up cost of seconds")
    add("--topk", type=int, metavar="K", help="top-k predictions per row (default 5)")
    add("--embeddings", action="store_true", default=None, help="also write the 1280-d pooled features")
    if not nightly:
        add("--run-date", metavar="YYYY-MM-DD", help="partition for the rows (default: today, UTC)")
    add("--max-error-rate", type=float, metavar="F",
        help="fail without committing when more than this fraction of items fail (default 0.1)")
    add("--address", metavar="ADDR", help="Ray cluster to join (default: RAY_ADDRESS, else a private local Ray)")
    add("--num-classes", type=int, metavar="N", help="head size for --weights random")
    add("--seed", type=int, metavar="N", help="seed for --weights random (default 0)")
    if not nightly:
        add("--reprocess", action="store_true", default=None,
            help="label items again even if this model and weights already labeled them")
        add("--resume", metavar="RUN_ID",
            help="continue that run (its id, date and rows): with --reprocess, what it committed is not labeled "
                 "again")
    add("--max-pixels", type=int, metavar="N", help="refuse images larger than this when decoded")
    add("--rows-per-file", type=int, metavar="N",
        help="rows per output Parquet file, at least (default 100000; a run's last file may hold fewer)")
    add("--row-group-size", type=int, metavar="N", help="rows per Parquet row group (default 50000)")
    add("--shard-size", type=int, metavar="N",
        help="items per shard, the unit of commit (default 500000: a few minutes of a GPU); a crash loses "
             "at most the shards in flight")
    add("--dry-run", action="store_true", default=False,
        help="list, diff and print the plan (items, shards, estimated output); start nothing, write nothing")
    add("--format", choices=("text", "json"), default="text", help="with --dry-run: text (default) or json")
    add("--config", metavar="FILE.toml", help="settings file; flags given here win")


def _resources(text: str) -> dict[str, float]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}); give e.g. '{{\"model_node\": 1}}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("give a JSON object of resource names and amounts, e.g. '{\"model_node\": 1}'")
    return value


def config_from_args(args: argparse.Namespace, *, settings: dict | None = None, **overrides: object) -> RunConfig:
    """Merge --config (if any; or ``settings`` read from it already) and flags; flags win.
    Raises UsageError for missing essentials."""
    if settings is None:
        settings = load_toml(args.config) if args.config else {}
    settings = dict(settings)
    for f in dataclasses.fields(RunConfig):
        flag = next((k for k, v in _FIELD.items() if v == f.name), f.name)
        value = getattr(args, flag, None)
        if value is not None:
            settings[f.name] = value
    settings.update(overrides)
    missing = [name for name in ("inputs", "output", "model") if not settings.get(name)]
    if missing:
        flags = ", ".join("--" + ("input" if m == "inputs" else m) for m in missing)
        raise UsageError(f"missing {flags} (on the command line or in --config)")
    settings["inputs"] = tuple(settings["inputs"])
    return RunConfig(**settings)


def print_summary(record: RunRecord, output: str) -> None:
    if record.error and record.status == "committed":  # nothing was left to do
        print(record.error)
        return
    if record.items == 0:
        print(f"nothing to label: all {record.items_listed} items are already labeled by this model and weights"
              if record.items_listed else "nothing to label: the inputs hold no image or audio files")
        _print_not_items(record)
        return
    statuses = " · ".join(f"{k} {v}" for k, v in record.rows_per_status.items())
    print(f"committed run {record.run_id} to {output}")
    print(f"  items:  {record.items} labeled ({record.items_listed} listed, {record.items_skipped} already labeled"
          f"{f', {record.duplicates} duplicates dropped' if record.duplicates else ''})")
    print(f"  shards: {record.shards_committed} of {record.shards_total} committed")
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
        print(f"  already labeled: {s.already_labeled}")
        if s.nothing_because:
            print(f"  nothing to do:   {s.nothing_because}")
        print(f"  to label:        {s.to_label} in {s.shards} shards of at most {s.shard_size}")
        print(f"  estimated:       {s.estimated_files} files, {s.estimated_bytes / 2**20:.1f} MiB")
        print(f"  planned in:      {s.list_s:.1f} s listing, {s.diff_s:.1f} s diff")
    print("dry run: nothing was started or written")


def execute(config: RunConfig, *, dry_run: bool = False, fmt: str = "text") -> int:
    if dry_run:
        print_plan(plan_by_modality(config), fmt)
        return 0
    for record in run_by_modality(config):
        print_summary(record, config.output)
    return 0


def command(args: argparse.Namespace) -> int:
    return execute(config_from_args(args), dry_run=args.dry_run, fmt=args.format)


COMMAND = Command(
    name="run",
    help="label inputs once (ad hoc)",
    description="Label images or audio with GhostNet on Ray Data; write Parquet and commit the run.",
    example=EXAMPLE,
    add_arguments=add_run_arguments,
    handler=command,
)

if __name__ == "__main__":
    sys.exit(COMMAND.main())
