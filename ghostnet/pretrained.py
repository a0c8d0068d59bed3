"""Weights shipped inside the package: two tiny demo models trained on synthetic samples.

They exist so `ghostnet-pipeline demo` labels something meaningful without a network. They know
only the procedurally generated classes of `demo.samples` (shapes and textures; synthesized
sounds) and are no use on real photos or recordings. `ghostnet-pipeline train` (`demo.train`) regenerates them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import GhostNet

__all__ = ["PRETRAINED", "Pretrained", "create_pretrained", "pretrained_path"]


@dataclass(frozen=True)
class Pretrained:
    name: str
    architecture: str
    modality: str
    file: str  # under ghostnet/data/
    sha256: str
    labels: tuple[str, ...]
    accuracy: float  # top-1 on 400 fresh samples (sounds: 1 s windows), measured when it was trained
    command: str  # how it was trained


PRETRAINED: dict[str, Pretrained] = {
    p.name: p
    for p in (
        Pretrained(
            name="demo-image",
            architecture="ghostnet_050",
            modality="image",
            file="demo_image.safetensors",
            sha256="3d362a01f374df146deccb6b7e5fd4173385769a994685abe9bb888486804ebd",
            labels=("circle", "square", "triangle", "ring", "cross", "stripes", "checker", "dots"),
            accuracy=0.967,
            command="ghostnet-pipeline train --modality image --out ghostnet/data/demo_image.safetensors --seed 1 "
            "--lr 0.005 --steps 1600 --samples 4000 --batch-size 64",
        ),
        Pretrained(
            name="demo-audio",
            architecture="ghostnet_050",
            modality="audio",
            file="demo_audio.safetensors",
            sha256="3590aa98b703bebe7ca60fac1daa3a2b909bb74a5c399110ca1ebd80cb57a077",
            labels=("tone", "chirp_up", "chirp_down", "white_noise", "brown_noise", "clicks", "am_tone", "fm_tone"),
            accuracy=0.983,
            command="ghostnet-pipeline train --modality audio --out ghostnet/data/demo_audio.safetensors --seed 2",
        ),
    )
}


def _entry(name: str) -> Pretrained:
    try:
        return PRETRAINED[name]
    except KeyError:
        raise ValueError(f"no shipped weights named {name!r}; shipped: {', '.join(PRETRAINED)}") from None


def pretrained_path(name: str) -> Path:
    """Local path of a shipped checkpoint, after checking its sha256 against the pin.

    Raises:
        ValueError: unknown name.
        WeightsError: the file is missing or its digest differs from the pin.
    """
    from .weights import WeightsError

    entry = _entry(name)
    path = Path(str(resources.files("ghostnet").joinpath("data", entry.file)))
    if not path.is_file():
        raise WeightsError(f"shipped weights {name!r} are missing: {path} (reinstall the package)")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != entry.sha256:
        raise WeightsError(f"shipped weights {name!r} at {path} have sha256 {digest}, expected {entry.sha256}")
    return path


def create_pretrained(name: str) -> GhostNet:
    """The shipped model `name`, with its labels and preprocessing as `model.meta`."""
    from .registry import create_model

    entry = _entry(name)
    return create_model(entry.architecture, weights=pretrained_path(name), weights_sha256=entry.sha256)
