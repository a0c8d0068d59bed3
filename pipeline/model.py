"""Which model a run uses, and the identity its rows carry.

A :class:`ModelSpec` is what an actor needs to load the model itself: names and a URI, never the
tensors. Its identity (``model``, ``weights_sha256``) decides what counts as "already labeled":
the architecture name and the weights file's digest; for random weights a descriptor of
everything that shapes them (seed, modality, head and input channels), so an image run with
random weights is never taken for an audio one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pipeline import storage
from pipeline.errors import InternalError

if TYPE_CHECKING:
    import torch

    import ghostnet

__all__ = ["RANDOM", "ModelIdentity", "ModelSpec", "file_sha256"]

RANDOM = "random"
IMAGENET_CLASSES = 1000


@dataclass(frozen=True, order=True)
class ModelIdentity:
    """What labeled a row: the model architecture and the sha256 of its weights (for random weights,
    what shapes them); the ``model`` and ``weights_sha256`` columns."""

    model: str
    weights_sha256: str

    @property
    def key(self) -> str:
        """A short stable digest of the pair, for application ids."""
        return hashlib.sha256(f"{self.model}\0{self.weights_sha256}".encode()).hexdigest()[:16]

    def __str__(self) -> str:
        return f"{self.model}@{self.weights_sha256[:12]}"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    weights: str | None = None  # URI, "random", or None for random weights
    weights_sha256: str | None = None
    seed: int = 0
    num_classes: int | None = None
    in_chans: int | None = None
    modality: str = "image"

    @property
    def is_random(self) -> bool:
        return self.weights in (None, RANDOM)

    def identity(self) -> str:
        """The ``weights_sha256`` column value: the file's digest, or what shapes random weights."""
        if self.is_random:
            classes = self.num_classes or IMAGENET_CLASSES
            chans = self.in_chans or (1 if self.modality == "audio" else 3)
            return f"random-seed-{self.seed}:{self.modality}:{classes}x{chans}"
        if self.weights_sha256 is None:
            raise InternalError("the weights digest must be resolved (ModelSpec.pinned) before the identity")
        return self.weights_sha256

    def model_identity(self) -> ModelIdentity:
        return ModelIdentity(self.name, self.identity())

    def pinned(self) -> ModelSpec:
        """The spec with the weights file's digest, read without loading any tensor; actors then
        refuse a file that changed after this check."""
        if self.is_random or self.weights_sha256 is not None or self.weights is None:
            return self
        if self.weights.startswith("hf-hub:"):
            return self
        return replace(self, weights_sha256=file_sha256(self.weights))

    def load(self) -> ghostnet.GhostNet:
        import ghostnet

        kwargs: dict[str, int | str] = {"modality": self.modality}
        if self.num_classes is not None:
            kwargs["num_classes"] = self.num_classes
        if self.in_chans is not None:
            kwargs["in_chans"] = self.in_chans
        if self.is_random:
            model = ghostnet.create_model(self.name, **kwargs)  # type: ignore[arg-type]
            ghostnet.init_random(model, self.seed)
            return model
        return ghostnet.create_model(self.name, weights=self.weights, weights_sha256=self.weights_sha256,
                                     **kwargs)  # type: ignore[arg-type]


def file_sha256(uri: str) -> str:
    """The sha256 of a file, streamed (no tensor is loaded)."""
    fs, path = storage.filesystem(uri)
    digest = hashlib.sha256()
    with storage.with_retries(lambda: fs.open(path, "rb")) as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pick_device() -> torch.device:
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
