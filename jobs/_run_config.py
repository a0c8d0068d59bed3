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
from pipeline.config import DECODERS, ENGINES, MODALITIES, ROLES, ModelEntry, RunConfig, load_toml
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


class _ModelEntries(argparse.Action):
    """Repeated ``--model NAME --weights URI [--weights-sha256 HEX] [--role ROLE]`` groups, in order:
    each flag fills the latest entry, or starts the next one when the latest has it already."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        entries: list[dict[str, Any]] = list(getattr(namespace, self.dest, None) or [])
        key = self.metavar_key
        if not entries or key in entries[-1]:
            entries.append({})
        entries[-1][key] = values
        setattr(namespace, self.dest, entries)

    @property
    def metavar_key(self) -> str:
        return str(self.const)


def _add_model(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument

    def entry(flag: str, dest: str, key: str, **kwargs: Any) -> None:
        add(flag, dest=dest, action=_ModelEntries, const=key, nargs=None, **kwargs)

    entry("--model", "model_entries", "name", metavar="NAME",
          help="architecture, e.g. ghostnet_100 (list them: ghostnet-pipeline models); repeat --model NAME "
               "--weights URI to label with several models in one pass (one decode)")
    entry("--weights", "model_entries", "weights", metavar="URI|random",
          help="local path, fsspec URL (s3://...), hf-hub:org/name, or 'random' (seeded; smoke tests only); "
               "of the --model before it")
    entry("--weights-sha256", "model_entries", "weights_sha256", metavar="HEX",
          help="refuse the weights (of the --model before it) unless their sha256 is this")
    entry("--role", "model_entries", "role", metavar="|".join(ROLES), choices=ROLES,
          help="of the --model before it: production or candidate (nightly --alert-agreement compares them)")
    entry("--audio-model", "audio_entries", "name", metavar="NAME",
          help="with --modality auto: the architecture for the audio files (repeatable, as --model)")
    entry("--audio-weights", "audio_entries", "weights", metavar="URI|random",
          help="with --modality auto: the weights of the --audio-model before it")
    entry("--audio-weights-sha256", "audio_entries", "weights_sha256", metavar="HEX",
          help="with --modality auto: refuse those audio weights unless their sha256 is this")
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


def _merge_models(settings: dict[str, Any], given: list[dict[str, Any]] | None, flat: str, listed: str) -> None:
    """The models of the flags into ``settings`` (a --config's). One entry on the command line
    overrides the config's model setting by setting, as the single-model flags always did (of its
    first model, when it names none); else the flags' entries replace the config's."""
    if not given:
        return
    prefix = flat.removesuffix("model")
    names = {"": flat, "weights": f"{prefix}weights", "weights_sha256": f"{prefix}weights_sha256"}
    configured = [dict(e) for e in settings.pop(listed, None) or []]
    single = {key: settings.pop(name) for key, name in names.items() if name in settings}
    if single.get(""):
        configured = configured or [{"name": single.pop(""), **single}]
    if len(given) == 1 and configured and (len(configured) == 1 or "name" not in given[0]):
        entries = [{**configured[0], **given[0]}, *configured[1:]]
    else:
        entries = given
    settings[listed] = [ModelEntry.from_settings(e, where=f"--{flat.replace('_', '-')}") for e in entries]


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
    _merge_models(settings, getattr(args, "model_entries", None), "model", "models")
    _merge_models(settings, getattr(args, "audio_entries", None), "audio_model", "audio_models")
    settings.update(overrides)
    missing = [name for name in ("inputs", "output") if not settings.get(name)]
    if not settings.get("model") and not settings.get("models"):
        missing.append("model")
    if missing:
        flags = ", ".join("--" + ("input" if m == "inputs" else m) for m in missing)
        raise UsageError(f"missing {flags} (on the command line or in --config)")
    settings["inputs"] = tuple(settings["inputs"])
    return RunConfig(**settings)
