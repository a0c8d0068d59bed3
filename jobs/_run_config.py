"""The flags of ``run``, which ``nightly`` shares, in the groups ``--help`` shows, and the
:class:`RunConfig` they make together with ``--config``.

A new flag goes into its group in :func:`add_run_arguments`; when its ``dest`` is a
:class:`RunConfig` field, :func:`config_from_args` takes it with no further code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from jobs._command import LOGGING_GROUP
from pipeline.config import DECODERS, ENGINES, MODALITIES, RunConfig, load_toml
from pipeline.errors import UsageError

__all__ = ["RunArguments", "add_run_arguments", "config_from_args"]

# flag name -> RunConfig field, where they differ
_FIELD = {"input": "inputs"}


@dataclass(frozen=True)
class RunArguments:
    """The groups of ``run --help``; a subcommand that shares the flags adds its own to them."""

    inputs: argparse._ArgumentGroup
    model: argparse._ArgumentGroup
    resources: argparse._ArgumentGroup
    control: argparse._ArgumentGroup
    output: argparse._ArgumentGroup


def add_run_arguments(parser: argparse.ArgumentParser, *, nightly: bool = False) -> RunArguments:
    """The flags of ``run``, which ``nightly`` shares but for those that choose the run's date and
    what it labels again; every one can also come from --config."""
    groups = RunArguments(
        inputs=parser.add_argument_group("inputs and outputs"),
        model=parser.add_argument_group("model and weights"),
        resources=parser.add_argument_group("resources and placement"),
        control=parser.add_argument_group("run control"),
        output=parser.add_argument_group(LOGGING_GROUP),
    )
    parser.add_argument("--config", metavar="FILE.toml", help="settings file holding any of these flags; flags "
                        "given here win")
    _add_inputs(groups.inputs)
    _add_model(groups.model)
    _add_resources(groups.resources)
    _add_control(groups.control, nightly=nightly)
    groups.output.add_argument("--format", choices=("text", "json"), default="text",
                               help="with --dry-run: text (default) or json")
    return groups


def _add_inputs(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument
    add("--input", action="append", metavar="URI",
        help="folder, prefix, glob (with *) or manifest (.txt/.csv/.parquet with a uri column); repeatable")
    add("--output", metavar="URI", help="where predictions, channel_stats and _runs/ live")
    add("--modality", choices=MODALITIES,
        help="image (default), audio (--model is the audio model), or auto: by extension, one run per modality")
    add("--max-pixels", type=int, metavar="N", help="refuse images larger than this when decoded")
    add("--rows-per-file", type=int, metavar="N",
        help="rows per output Parquet file, at least (default 100000; a run's last file may hold fewer)")
    add("--row-group-size", type=int, metavar="N", help="rows per Parquet row group (default 50000)")


def _add_model(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument
    add("--model", metavar="NAME", help="architecture, e.g. ghostnet_100 (list them: ghostnet-pipeline models)")
    add("--weights", metavar="URI|random",
        help="local path, fsspec URL (s3://...), hf-hub:org/name, or 'random' (seeded; smoke tests only)")
    add("--weights-sha256", metavar="HEX", help="refuse the weights unless their sha256 is this")
    add("--audio-model", metavar="NAME", help="with --modality auto: the architecture for the audio files")
    add("--audio-weights", metavar="URI|random", help="with --modality auto: the audio model's weights")
    add("--audio-weights-sha256", metavar="HEX",
        help="with --modality auto: refuse the audio weights unless their sha256 is this")
    add("--num-classes", type=int, metavar="N", help="head size for --weights random")
    add("--seed", type=int, metavar="N", help="seed for --weights random (default 0)")
    add("--topk", type=int, metavar="K", help="top-k predictions per row (default 5)")
    add("--embeddings", action="store_true", default=None, help="also write the 1280-d pooled features")


def _add_resources(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument
    add("--address", metavar="ADDR", help="Ray cluster to join (default: RAY_ADDRESS, else a private local Ray)")
    add("--actors", type=int, metavar="N",
        help="model actors (default: one per GPU; without GPUs, one per core for 3/4 of the cores)")
    add("--gpus-per-actor", type=float, metavar="F", help="GPUs per actor (default 1 with GPUs, else 0)")
    add("--actor-resources", type=_resources, metavar="JSON",
        help='other Ray resources per actor, e.g. \'{"model_node": 1}\' to place actors on nodes started '
             'with --resources \'{"model_node": N}\' (default: one actor per unit of it)')
    add("--batch-size", type=int, metavar="N", help="rows per model call (default 256 on GPU, 32 on CPU)")
    add("--decode", choices=DECODERS,
        help="where JPEGs are decoded: device (nvJPEG on the actor's GPU), cpu (Pillow in tasks), "
             "auto (default: device when actors have GPUs)")
    add("--decode-batch-size", type=int, metavar="N", help="items per decode task call (default 32)")
    add("--compile", action="store_true", default=None,
        help="torch.compile the model in each actor: faster batches after a start-up cost of seconds")
    add("--engine", choices=ENGINES,
        help="what runs the model in each actor: torch, compile (= --compile) or onnx (ONNX Runtime, CPU "
             "actors); default onnx on CPU actors, torch (fp16) on GPUs")


def _add_control(group: argparse._ArgumentGroup, *, nightly: bool) -> None:
    add = group.add_argument
    add("--shard-size", type=int, metavar="N",
        help="items per shard, the unit of commit (default 500000: a few minutes of a GPU); a crash loses "
             "at most the shards in flight")
    add("--max-error-rate", type=float, metavar="F",
        help="fail without committing when more than this fraction of items fail (default 0.1)")
    if not nightly:
        add("--run-date", metavar="YYYY-MM-DD", help="partition for the rows (default: today, UTC)")
        add("--resume", metavar="RUN_ID",
            help="continue that run (its id, date and rows): with --reprocess, what it committed is not labeled "
                 "again")
        add("--reprocess", action="store_true", default=None,
            help="label items again even if this model and weights already labeled them")
    add("--dry-run", action="store_true", default=False,
        help="list, diff and print the plan (items, shards, estimated output); start nothing, write nothing")


def _resources(text: str) -> dict[str, float]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}); give e.g. '{{\"model_node\": 1}}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("give a JSON object of resource names and amounts, e.g. '{\"model_node\": 1}'")
    return value


def config_from_args(args: argparse.Namespace, *, settings: dict[str, Any] | None = None,
                     **overrides: object) -> RunConfig:
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
