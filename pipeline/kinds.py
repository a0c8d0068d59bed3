"""What an input item can be: its :class:`Modality`, and the registry of input kinds (:data:`KINDS`).

An input kind is all the pipeline needs to label one kind of file:

- its **extensions**: a listed object whose name ends in one of them is an item of the kind
  (read where inputs are listed; nothing here imports torch);
- its **decoder**: the decode stage of a run, which turns the items' bytes into rows for the model
  (:data:`pipeline.schema.DECODED`), on Ray tasks;
- its **front end**: how a model actor turns those rows into the model's input tensor.

The decoder and the front end live in the kind's own module (``DECODER`` and ``FRONT_END``), which
is imported only where they run. Adding a kind is that module, a :class:`Modality` member and its
line in :data:`KINDS`.
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ghostnet import ModelMeta
    from pipeline.config import RunConfig

__all__ = ["AUTO", "KINDS", "Decoder", "FrontEnd", "InputKind", "Modality", "decode_groups", "kind_of"]


class Modality(str, enum.Enum):
    """What an item is: the ``modality`` column of its rows, and of a run (``--modality``). A
    ``str``, so it compares, formats and serializes as its value (``"image"``)."""

    IMAGE = "image"
    AUDIO = "audio"

    def __str__(self) -> str:
        return self.value


AUTO: Final = "auto"  # --modality auto: each item by its extension, one run per modality found


class Decoder(Protocol):
    """A kind's decode stage for one run: the function Ray Data maps over the items and its keyword
    arguments (the caller adds ``reporter``), for the run's decode groups (one model's metadata
    per distinct preprocessing, in group order)."""

    def __call__(self, config: RunConfig, metas: list[ModelMeta], *,
                 on_device: bool) -> tuple[Callable[..., Any], dict[str, Any]]: ...


@dataclass(frozen=True)
class FrontEnd:
    """How a model actor turns a kind's decoded rows (``encoding`` ``raw``) into the model's input."""

    # The ``encoded`` bytes of a batch's decoded rows as one host array, e.g. (n, H, W, C) uint8.
    host_inputs: Callable[[list[bytes], ModelMeta], np.ndarray]
    # For (meta, the model's minimum input size, device, dtype): the function from a host or device
    # array of decoded inputs to the model's input tensor.
    model_input: Callable[[ModelMeta, int, torch.device, torch.dtype],
                          Callable[[np.ndarray | torch.Tensor], torch.Tensor]]
    # ``rows`` zero inputs as ``host_inputs`` gives them (the warm-up batch of torch.compile).
    example_input: Callable[[ModelMeta, int], np.ndarray]
    # What the decoded input depends on: models with equal keys share one decode (normalization
    # and the log-mel happen on the actor, per model, so they are not part of it).
    decode_key: Callable[[ModelMeta], Hashable]
    # Items may travel still encoded and be decoded on the actor's device (JPEGs, by nvJPEG).
    device_decode: bool = False


@dataclass(frozen=True)
class InputKind:
    """One registered kind: its extensions (lower case, with the dot) and the module holding its
    ``DECODER`` and ``FRONT_END``."""

    extensions: frozenset[str]
    module: str

    def decoder(self) -> Decoder:
        return cast("Decoder", importlib.import_module(self.module).DECODER)

    def front_end(self) -> FrontEnd:
        return cast(FrontEnd, importlib.import_module(self.module).FRONT_END)


KINDS: dict[Modality, InputKind] = {
    Modality.IMAGE: InputKind(frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"}),
                              "pipeline.decode"),
    Modality.AUDIO: InputKind(frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3"}), "pipeline.audio"),
}


def kind_of(modality: str) -> InputKind:
    """The registered kind of ``modality`` (a :class:`Modality` or its value)."""
    try:
        return KINDS[Modality(modality)]
    except ValueError:
        raise ValueError(f"no input kind {modality!r}; the kinds are {', '.join(KINDS)}") from None


def decode_groups(modality: str, metas: list[ModelMeta]) -> list[int]:
    """For each model of a run, its decode group: models whose preprocessing gives the same decoded
    input (the front end's ``decode_key``) share one, numbered in order of first appearance."""
    key = kind_of(modality).front_end().decode_key
    keys: dict[Hashable, int] = {}
    return [keys.setdefault(key(meta), len(keys)) for meta in metas]
