"""GhostNet v1/v2/v3 for inference: timm-compatible models, safe weight loading, fusion, channel weights.

Names load on first use (like ``pipeline``), so that importing a module that only needs the
shipped weights table or the metadata does not import torch: a CLI that starts Ray first
imports torch while Ray starts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .audio import LogMel
    from .channel_weights import InferenceOutput, capture_channel_weights, channel_weight_names
    from .fuse import for_inference, reparameterize
    from .meta import AudioFrontend, ModelMeta, imagenet_labels
    from .model import GhostNet, checkpoint_filter_fn
    from .registry import create_model, default_meta, list_models
    from .transforms import normalize, resize_crop
    from .weights import WeightsError, init_random, load_weights, save_weights

_PUBLIC = {
    "AudioFrontend": "meta",
    "GhostNet": "model",
    "InferenceOutput": "channel_weights",
    "LogMel": "audio",
    "ModelMeta": "meta",
    "WeightsError": "weights",
    "capture_channel_weights": "channel_weights",
    "channel_weight_names": "channel_weights",
    "checkpoint_filter_fn": "model",
    "create_model": "registry",
    "default_meta": "registry",
    "for_inference": "fuse",
    "imagenet_labels": "meta",
    "init_random": "weights",
    "list_models": "registry",
    "load_weights": "weights",
    "normalize": "transforms",
    "reparameterize": "fuse",
    "resize_crop": "transforms",
    "save_weights": "weights",
}

__all__ = [
    "AudioFrontend",
    "GhostNet",
    "InferenceOutput",
    "LogMel",
    "ModelMeta",
    "WeightsError",
    "capture_channel_weights",
    "channel_weight_names",
    "checkpoint_filter_fn",
    "create_model",
    "default_meta",
    "for_inference",
    "imagenet_labels",
    "init_random",
    "list_models",
    "load_weights",
    "normalize",
    "reparameterize",
    "resize_crop",
    "save_weights",
]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
        globals()[name] = value
        return value
    try:  # a submodule: ghostnet.transforms, ghostnet.channel_weights, ...
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
