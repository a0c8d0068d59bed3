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
_NO_AUDIO_MODEL = {"audio_model": None, "audio_weights": "random", "audio_weights_sha256": None}


def default_batch_size(on_gpu: bool) -> int:
    """Rows per model call when ``--batch-size`` is not given: 256 on a GPU, 32 on a CPU."""
    return 256 if on_gpu else 32


@dataclass(frozen=True)
class RunConfig:
    """Everything ``ghostnet-pipeline run`` accepts; defaults suit a laptop or one GPU node."""

    inputs: tuple[str, ...]
    output: str
    model: str
    weights: str | None = "random"
    weights_sha256: str | None = None
    modality: Modality | Literal["auto"] = Modality.IMAGE
    decode: str = "auto"  # where JPEGs are decoded: auto = on the model actor's GPU when it has one
    # The audio model of a --modality auto run; with --modality audio, model/weights are the audio model.
    audio_model: str | None = None
    audio_weights: str | None = "random"
    audio_weights_sha256: str | None = None
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
            changes.update(model=self.audio_model, weights=self.audio_weights, weights_sha256=self.audio_weights_sha256)
        return self.replace(**changes)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def to_record(self) -> dict[str, Any]:
        """The settings as written into the run's commit record (URIs redacted by the caller)."""
        return dataclasses.asdict(self)


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
