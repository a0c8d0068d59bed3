"""``ghostnet-pipeline run`` / ``python -m jobs.label``: an ad-hoc labeling run.

Exit codes: 0 committed (or nothing left to label), 1 failed with nothing committed,
2 usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from jobs._command import Command
from jobs._errors import guarded
from pipeline.config import DECODERS, MODALITIES, RunConfig, load_toml
from pipeline.run import RunResult, run_by_modality

EXAMPLE = """example:
  ghostnet-pipeline run --input s3://photos/2026/ --output s3://labels/photos \\
      --model ghostnet_100 --weights s3://models/ghostnet_100.safetensors --topk 5
  ghostnet-pipeline run --input s3://media/ --output s3://labels/media --modality auto \
      --model ghostnet_100 --weights s3://models/ghostnet_100.safetensors \
      --audio-model ghostnetv2_100 --audio-weights s3://models/sounds.safetensors
"""

# flag name -> RunConfig field, where they differ
_FIELD = {"input": "inputs"}


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags shared by ``run`` and ``nightly``; every one can also come from --config."""
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
    add("--actors", type=int, metavar="N", help="model actors (default: one per GPU, or 1)")
    add("--gpus-per-actor", type=float, metavar="F", help="GPUs per actor (default 1 with GPUs, else 0)")
    add("--actor-resources", type=_resources, metavar="JSON",
        help='other Ray resources per actor, e.g. \'{"model_node": 1}\' to place actors on nodes started '
             'with --resources \'{"model_node": N}\' (default: one actor per unit of it)')
    add("--compile", action="store_true", default=None,
        help="torch.compile the model in each actor: faster batches after a start-up cost of seconds")
    add("--topk", type=int, metavar="K", help="top-k predictions per row (default 5)")
    add("--embeddings", action="store_true", default=None, help="also write the 1280-d pooled features")
    add("--run-date", metavar="YYYY-MM-DD", help="partition for the rows (default: today, UTC)")
    add("--max-error-rate", type=float, metavar="F",
        help="fail without committing when more than this fraction of items fail (default 0.1)")
    add("--address", metavar="ADDR", help="Ray cluster to join (default: RAY_ADDRESS, else a private local Ray)")
    add("--num-classes", type=int, metavar="N", help="head size for --weights random")
    add("--seed", type=int, metavar="N", help="seed for --weights random (default 0)")
    add("--reprocess", action="store_true", default=None,
        help="label items again even if this model and weights already labeled them")
    add("--max-pixels", type=int, metavar="N", help="refuse images larger than this when decoded")
    add("--rows-per-file", type=int, metavar="N",
        help="rows per output Parquet file, at least (default 100000; a run's last file may hold fewer)")
    add("--row-group-size", type=int, metavar="N", help="rows per Parquet row group (default 50000)")
    add("--config", metavar="FILE.toml", help="settings file; flags given here win")


def _resources(text: str) -> dict[str, float]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}); give e.g. '{{\"model_node\": 1}}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("give a JSON object of resource names and amounts, e.g. '{\"model_node\": 1}'")
    return value


def config_from_args(args: argparse.Namespace, *, settings: dict | None = None, **overrides) -> RunConfig:
    """Merge --config (if any; or ``settings`` read from it already) and flags; flags win.
    Raises ValueError for missing essentials."""
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
        raise ValueError(f"missing {flags} (on the command line or in --config)")
    settings["inputs"] = tuple(settings["inputs"])
    return RunConfig(**settings)


def print_summary(result: RunResult) -> None:
    if not result.committed:
        print(result.message)
        return
    statuses = " · ".join(f"{k} {v}" for k, v in result.rows_per_status.items())
    skipped = result.items_listed - result.items
    print(f"{result.message} to {result.output}")
    print(f"  items:  {result.items} labeled ({result.items_listed} listed, {skipped} already labeled)")
    print(f"  rows:   {result.rows} ({statuses})")
    print(f"  speed:  {result.items_per_s:.1f} items/s, {result.elapsed_s:.1f} s elapsed")
    files = result.record.get("files", {}).get("predictions", [])
    where = files[0].rsplit("/", 1)[0] if files else result.output
    print(f"  output: {where}/ (run record: _runs/{result.run_id}.json)")


def execute(config: RunConfig) -> int:
    for result in run_by_modality(config):
        print_summary(result)
    return 0


def command(args: argparse.Namespace) -> int:
    return guarded(lambda: execute(config_from_args(args)))


COMMAND = Command(
    name="run",
    help="label inputs once (ad hoc)",
    description="Label images or audio with GhostNet on Ray Data; write Parquet and commit the run.",
    example=EXAMPLE,
    add_arguments=add_run_arguments,
    handler=command,
)
build_parser = COMMAND.build_parser
register = COMMAND.register
main = COMMAND.main

if __name__ == "__main__":
    sys.exit(COMMAND.main())
