"""The settings of one labeling run, as data: built by the CLI, a TOML file, or a caller."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pipeline.errors import UsageError
from pipeline.kinds import AUTO, Modality

DEFAULT_MAX_PIXELS = 100_000_000
DEFAULT_MAX_FILE_BYTES = 1 << 30

MODALITIES = (*(m.value for m in Modality), AUTO)
DECODERS = ("auto", "cpu", "device")
ENGINES = ("torch", "compile", "onnx")  # pipeline/engine.py
ROLES = ("production", "candidate")
MAX_MODELS = 16  # per run and modality: the plan marks each item's models in one int32 mask
_NO_AUDIO_MODEL = {"audio_model": None, "audio_weights": "random", "audio_weights_sha256": None, "audio_models": ()}
_FLAT = ("model", "weights", "weights_sha256")  # the first model, as the single-model settings name it
_FLAT_DEFAULTS = {"model": "", "weights": "random", "weights_sha256": None}


@dataclass(frozen=True)
class ModelEntry:
    """One model of a run: architecture, weights and what to write for it. ``topk`` and
    ``embeddings`` left as None take the run's (``--topk``, ``--embeddings``); ``role`` marks the
    production model and its candidates for ``nightly --alert-agreement``."""

    name: str
    weights: str | None = "random"
    weights_sha256: str | None = None
    topk: int | None = None
    embeddings: bool | None = None
    role: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise UsageError("a model entry needs a name (--model NAME, or `name` in [[models]])")
        if self.role is not None and self.role not in ROLES:
            raise UsageError(f"model {self.name}: role must be one of {', '.join(ROLES)}, got {self.role!r}")
        if self.topk is not None and self.topk < 1:
            raise UsageError(f"model {self.name}: topk must be at least 1, got {self.topk}")

    @classmethod
    def from_settings(cls, values: dict[str, Any], *, where: str) -> ModelEntry:
        """An entry from a ``[[models]]`` table (``model`` is taken for ``name``)."""
        values = dict(values)
        if "model" in values:
            values.setdefault("name", values.pop("model"))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"{where}: unknown settings {unknown} in a model entry; known: {sorted(known)}")
        return cls(**values)


def default_batch_size(on_gpu: bool) -> int:
    """Rows per model call when ``--batch-size`` is not given: 256 on a GPU, 32 on a CPU."""
    return 256 if on_gpu else 32


@dataclass(frozen=True)
class RunConfig:
    """Everything ``ghostnet-pipeline run`` accepts; defaults suit a laptop or one GPU node."""

    inputs: tuple[str, ...]
    output: str
    # The first model (of the images, or of --modality audio). Several models: ``models``, whose first
    # entry these then are.
    model: str = ""
    weights: str | None = "random"
    weights_sha256: str | None = None
    models: tuple[ModelEntry, ...] = ()
    modality: Modality | Literal["auto"] = Modality.IMAGE
    decode: str = "auto"  # where JPEGs are decoded: auto = on the model actor's GPU when it has one
    # The audio model of a --modality auto run; with --modality audio, model/weights are the audio model.
    audio_model: str | None = None
    audio_weights: str | None = "random"
    audio_weights_sha256: str | None = None
    audio_models: tuple[ModelEntry, ...] = ()  # several audio models of a --modality auto run
    batch_size: int | None = None  # None: default_batch_size(on the actor's device)
    # None: one per GPU (or per unit of actor_resources); on a CPU-only cluster one per core for
    # stages.CPU_MODEL_SHARE of the cores; never more than the run has model batches.
    actors: int | None = None
    gpus_per_actor: float | None = None  # None: 1 where the cluster has GPUs, else 0
    cpus_per_actor: float | None = None  # None: 1 for a GPU actor, stages.CPU_ACTOR_CPUS on a CPU-only cluster
    # Ray resources each model actor also needs, e.g. {"model_node": 1} to keep actors on the nodes
    # that advertise that custom resource; with it and no --actors, one actor per unit in the cluster.
    actor_resources: dict[str, float] | None = None
    compile: bool = False  # torch.compile the model in each actor (costs seconds at start): --engine compile
    engine: str | None = None  # None: pipeline.engine's default for the actor's device (onnx on CPU, torch on GPU)
    topk: int = 5
    embeddings: bool = False
    run_date: str = field(default_factory=lambda: datetime.now(timezone.utc).date().isoformat())
    run_id: str | None = None
    max_error_rate: float = 0.1
    address: str | None = None
    seed: int = 0
    num_classes: int | None = None
    reprocess: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    # Items per decode call; 32 gave a 6-10% higher end-to-end rate than 16 on 2 CPUs (bench/RESULTS.md).
    decode_batch_size: int = 32
    # Items per shard, the unit of commit: at 2,000-8,000 images/s per GPU, 500,000 items commit
    # every 1-4 minutes on one GPU (faster with more); a crash loses at most the shards in flight.
    shard_size: int = 500_000
    resume: str | None = None  # the run id to continue (its rows are not labeled again)
    rows_per_file: int = 100_000  # output files hold at least this many rows, except a shard's last
    row_group_size: int = 50_000  # Parquet row group, the unit DuckDB and Spark scan in parallel
    torch_threads: int | None = None
    num_cpus: int | None = None  # for the private local Ray only

    def __post_init__(self) -> None:
        if not self.inputs:
            raise UsageError("at least one --input is required")
        object.__setattr__(self, "models", _entries(self.models, self.model, self.weights, self.weights_sha256,
                                                    what="--model"))
        object.__setattr__(self, "model", self.models[0].name)
        object.__setattr__(self, "weights", self.models[0].weights)
        object.__setattr__(self, "weights_sha256", self.models[0].weights_sha256)
        if self.audio_models or self.audio_model:
            audio = _entries(self.audio_models, self.audio_model or "", self.audio_weights, self.audio_weights_sha256,
                             what="--audio-model")
            object.__setattr__(self, "audio_models", audio)
            object.__setattr__(self, "audio_model", audio[0].name)
            object.__setattr__(self, "audio_weights", audio[0].weights)
            object.__setattr__(self, "audio_weights_sha256", audio[0].weights_sha256)
        if self.modality not in MODALITIES:
            raise UsageError(f"--modality must be one of {', '.join(MODALITIES)}, got {self.modality!r}")
        if self.modality != AUTO:  # from a flag or a TOML file it is text
            object.__setattr__(self, "modality", Modality(self.modality))
        if self.decode not in DECODERS:
            raise UsageError(f"--decode must be one of {', '.join(DECODERS)}, got {self.decode!r}")
        if self.engine is not None and self.engine not in ENGINES:
            raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.compile and self.engine not in (None, "compile"):
            raise UsageError(f"--compile is --engine compile; it cannot go with --engine {self.engine}")
        if self.modality != AUTO and any(getattr(self, k) != v for k, v in _NO_AUDIO_MODEL.items()):
            raise UsageError(
                "--audio-model, --audio-weights and --audio-weights-sha256 are for --modality auto; "
                "with --modality audio, --model and --weights name the audio model"
            )
        if not 0.0 <= self.max_error_rate <= 1.0:
            raise UsageError(f"--max-error-rate must be between 0 and 1, got {self.max_error_rate}")
        if self.topk < 1:
            raise UsageError(f"--topk must be at least 1, got {self.topk}")
        if self.num_classes is not None and self.num_classes < 1:
            raise UsageError(
                f"--num-classes must be at least 1 (the head size of --weights random, e.g. --num-classes 10), "
                f"got {self.num_classes}"
            )
        for name in ("batch_size", "actors", "rows_per_file", "row_group_size", "decode_batch_size", "shard_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.gpus_per_actor is not None and self.gpus_per_actor < 0:
            raise UsageError(f"--gpus-per-actor must not be negative, got {self.gpus_per_actor}")
        for name, amount in (self.actor_resources or {}).items():
            if not isinstance(name, str) or not isinstance(amount, int | float) or amount <= 0:
                raise UsageError(
                    f"--actor-resources maps resource names to positive amounts, e.g. '{{\"model_node\": 1}}'; "
                    f"got {name!r}: {amount!r}"
                )

    def topk_of(self, entry: ModelEntry) -> int:
        return entry.topk if entry.topk is not None else self.topk

    def embeddings_of(self, entry: ModelEntry) -> bool:
        return entry.embeddings if entry.embeddings is not None else self.embeddings

    @property
    def modalities(self) -> tuple[Modality, ...]:
        """The kinds of item this run labels: every registered kind for ``--modality auto``."""
        return tuple(Modality) if self.modality == AUTO else (Modality(self.modality),)

    def for_modality(self, modality: Modality | str) -> RunConfig:
        """The single-model run of one modality of a ``--modality auto`` run, with its own run id."""
        modality = Modality(modality)
        changes: dict[str, Any] = {
            "modality": modality,
            "run_id": f"{self.run_id}-{modality}" if self.run_id else None,
            **_NO_AUDIO_MODEL,
        }
        if modality == Modality.AUDIO:
            if not self.audio_model:
                raise UsageError(
                    "the inputs hold audio files: give --audio-model (and --audio-weights) for them, "
                    "or use --modality image to label only the images"
                )
            changes.update(models=self.audio_models, **_FLAT_DEFAULTS)
        return self.replace(**changes)

    def keeping_models(self, keep: list[int]) -> RunConfig:
        """The same run with only the models at positions ``keep``, in that order."""
        return self.replace(models=tuple(self.models[i] for i in keep), **_FLAT_DEFAULTS)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def to_record(self) -> dict[str, Any]:
        """The settings as written into the run's commit record (URIs redacted by the caller)."""
        return dataclasses.asdict(self)


def _entries(models: tuple[ModelEntry, ...] | list[Any], model: str, weights: str | None, weights_sha256: str | None,
             *, what: str) -> tuple[ModelEntry, ...]:
    """The run's model entries: ``models`` (entries, or their settings as a TOML file holds them),
    else the one model the single-model settings name. Both given must agree on the first."""
    entries = tuple(m if isinstance(m, ModelEntry) else ModelEntry.from_settings(m, where=what) for m in models)
    if not entries:
        if not model:
            raise UsageError(f"missing {what} (on the command line or in --config)")
        return (ModelEntry(model, weights, weights_sha256),)
    first = entries[0]
    given = {"model": model, "weights": weights, "weights_sha256": weights_sha256}
    clash = [k for k in _FLAT if given[k] != _FLAT_DEFAULTS[k] and given[k] != getattr(first, "name" if k == "model"
                                                                                        else k)]
    if clash:
        raise UsageError(f"{what}: give the models either as the single-model settings or as a list of entries "
                         f"([[models]]), not both ({', '.join(clash)} disagree with the first entry)")
    if len(entries) > MAX_MODELS:
        raise UsageError(f"{len(entries)} models in one run: at most {MAX_MODELS}; split them over runs "
                         "(docs/operations.md, 'Several models')")
    if sum(e.role == "production" for e in entries) > 1:
        raise UsageError(f"{what}: several models have the role production; give it to one")
    seen = [(e.name, e.weights, e.weights_sha256) for e in entries]
    if len(set(seen)) < len(seen):
        raise UsageError(f"{what}: the same model and weights are given twice; give each once")
    return entries


def load_toml(path: str | Path, *, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Settings from a TOML file: the same names as the flags, with ``_`` for ``-``.

    ``extra`` names the settings of a subcommand beyond RunConfig's (nightly's ``date``, ``wait``);
    the caller takes them out. A TOML date (``date = 2026-11-27``, unquoted) comes back as text.
    """
    data = tomllib.loads(Path(path).read_text())
    table = data.get("run", data)
    known = {f.name for f in dataclasses.fields(RunConfig)} | {"input", *extra}
    unknown = sorted(set(table) - known)
    if unknown:
        raise UsageError(f"{path}: unknown settings {unknown}; known: {sorted(known)}")
    table = {k: v.isoformat() if isinstance(v, date) else v for k, v in table.items()}
    if "input" in table:
        table["inputs"] = table.pop("input")
    if isinstance(table.get("inputs"), str):
        table["inputs"] = [table["inputs"]]
    return table
