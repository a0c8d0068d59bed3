"""What a model needs besides its tensors: labels and input preprocessing, serialisable as JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "AudioFrontend", "ModelMeta", "imagenet_labels"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MODALITIES = ("image", "audio")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")


@cache
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in class-index order (first WordNet lemma of each synset)."""
    text = resources.files("ghostnet").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(text.splitlines())


@dataclass(frozen=True)
class AudioFrontend:
    """Log-mel front end that turns a waveform window into a (n_mels x frames) model input."""

    sample_rate: int
    n_fft: int
    hop_length: int
    n_mels: int
    f_min: float
    f_max: float | None
    window_s: float
    hop_s: float
    log_offset: float


@dataclass(frozen=True)
class ModelMeta:
    """Labels and preprocessing that belong to a set of weights.

    `input_size` is (channels, height, width). For images, eval preprocessing resizes the shorter
    side to `floor(size / crop_pct)` with `interpolation`, centre-crops to `input_size` and
    normalises with `mean`/`std`. Audio models carry their front end in `audio`.
    """

    architecture: str
    num_classes: int
    in_chans: int
    labels: tuple[str, ...]
    modality: str = "image"
    input_size: tuple[int, int, int] = (3, 224, 224)
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    audio: AudioFrontend | None = None

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise ValueError(f"invalid ModelMeta for {self.architecture!r}: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        checks = [
            (
                len(self.labels) == self.num_classes,
                f"{len(self.labels)} labels for num_classes={self.num_classes}",
            ),
            (self.modality in MODALITIES, f"modality must be one of {MODALITIES}, got {self.modality!r}"),
            (
                len(self.input_size) == 3 and self.input_size[0] == self.in_chans,
                f"input_size {self.input_size} does not start with in_chans={self.in_chans}",
            ),
            (
                len(self.mean) == len(self.std) == self.in_chans,
                f"mean/std need {self.in_chans} values, got {len(self.mean)}/{len(self.std)}",
            ),
            (0 < self.crop_pct <= 1, f"crop_pct must be in (0, 1], got {self.crop_pct}"),
            (
                self.interpolation in INTERPOLATIONS,
                f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}",
            ),
            (
                (self.audio is not None) == (self.modality == "audio"),
                "audio front end must be given exactly when modality is 'audio'",
            ),
        ]
        return [message for ok, message in checks if not ok]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ModelMeta:
        try:
            fields: dict[str, Any] = json.loads(text)
            audio = fields.pop("audio", None)
            values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
            return cls(
                **values,
                audio=AudioFrontend(**audio) if audio is not None else None,
            )
        except (json.JSONDecodeError, TypeError, AttributeError) as err:
            raise ValueError(f"not a valid ModelMeta JSON document: {err}") from err
