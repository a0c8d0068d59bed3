"""Registered GhostNet variants, their default metadata, and the one way to build a model."""

from __future__ import annotations

import difflib
import fnmatch
import os
from dataclasses import dataclass

from .meta import IMAGENET_MEAN, IMAGENET_STD, ModelMeta, imagenet_labels
from .model import GhostNet, Version
from .weights import Checkpoint, WeightsError, check_architecture, load_state_dict_strict, read_checkpoint

__all__ = ["create_model", "default_meta", "list_models"]

IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class _Variant:
    width: float
    version: Version


_VARIANTS: dict[str, _Variant] = {}


def _register(name: str, width: float, version: Version) -> None:
    if name in _VARIANTS:
        raise ValueError(f"model {name!r} is already registered")
    _VARIANTS[name] = _Variant(width, version)


for _name, _width, _version in (
    ("ghostnet_050", 0.5, "v1"),
    ("ghostnet_100", 1.0, "v1"),
    ("ghostnet_130", 1.3, "v1"),
    ("ghostnetv2_100", 1.0, "v2"),
    ("ghostnetv2_130", 1.3, "v2"),
    ("ghostnetv2_160", 1.6, "v2"),
    ("ghostnetv3_050", 0.5, "v3"),
    ("ghostnetv3_100", 1.0, "v3"),
    ("ghostnetv3_130", 1.3, "v3"),
    ("ghostnetv3_160", 1.6, "v3"),
):
    _register(_name, _width, _version)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted, optionally filtered by a shell-style pattern such as "ghostnetv2_*"."""
    names = sorted(_VARIANTS)
    return names if pattern is None else fnmatch.filter(names, pattern)


def default_meta(name: str, *, num_classes: int = IMAGENET_CLASSES, in_chans: int = 3) -> ModelMeta:
    """timm's eval preprocessing for GhostNet (224 px, crop 0.875, bicubic, ImageNet statistics).

    ImageNet labels for 1000 classes, "0".."n-1" otherwise. Inputs with other than 3 channels
    use the channel average of the ImageNet mean and std.
    """
    _variant(name)
    labels = imagenet_labels() if num_classes == IMAGENET_CLASSES else tuple(map(str, range(num_classes)))
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if in_chans != len(IMAGENET_MEAN):
        mean = (round(sum(IMAGENET_MEAN) / 3, 3),) * in_chans
        std = (round(sum(IMAGENET_STD) / 3, 3),) * in_chans
    return ModelMeta(
        architecture=name,
        num_classes=num_classes,
        in_chans=in_chans,
        labels=labels,
        input_size=(in_chans, 224, 224),
        mean=mean,
        std=std,
    )


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    weights: str | os.PathLike[str] | None = None,
    weights_sha256: str | None = None,
) -> GhostNet:
    """Build a registered GhostNet, optionally with weights, and attach its `ModelMeta` as `model.meta`.

    Example:
        >>> from ghostnet import create_model
        >>> model = create_model("ghostnet_100", num_classes=10)
        >>> model.meta.num_classes
        10

    Args:
        name: A name from `list_models()`.
        num_classes: Classifier size. Default 1000, or the checkpoint's when `weights` is given.
        in_chans: Input channels. Default 3, or the checkpoint's when `weights` is given.
        weights: Local path, fsspec URL or `hf-hub:org/name`; its metadata (labels, preprocessing)
            replaces the defaults.
        weights_sha256: Expected digest of the weights file.

    Raises:
        ValueError: unknown name (with close matches), or `num_classes`/`in_chans` that disagree
            with the checkpoint.
        WeightsError: the weights cannot be read, are unsafe or do not fit the architecture.
    """
    variant = _variant(name)
    if weights is None:
        meta = default_meta(name, num_classes=num_classes or IMAGENET_CLASSES, in_chans=in_chans or 3)
        return _build(variant, meta)
    checkpoint = read_checkpoint(weights, sha256=weights_sha256)
    meta = _checkpoint_meta(name, checkpoint)
    _check_override("num_classes", num_classes, meta.num_classes, checkpoint.uri)
    _check_override("in_chans", in_chans, meta.in_chans, checkpoint.uri)
    model = _build(variant, meta)
    load_state_dict_strict(model, checkpoint.state_dict, source=checkpoint.uri)
    model.weights_sha256 = checkpoint.sha256
    return model


def _build(variant: _Variant, meta: ModelMeta) -> GhostNet:
    return GhostNet(
        width=variant.width,
        version=variant.version,
        num_classes=meta.num_classes,
        in_chans=meta.in_chans,
        meta=meta,
    )


def _variant(name: str) -> _Variant:
    try:
        return _VARIANTS[name]
    except KeyError:
        close = difflib.get_close_matches(name, _VARIANTS, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"available: {', '.join(list_models())}"
        raise ValueError(f"unknown model {name!r}; {hint}") from None


def _checkpoint_meta(name: str, checkpoint: Checkpoint) -> ModelMeta:
    if checkpoint.meta is None:
        return default_meta(
            name,
            num_classes=_dim(checkpoint, "classifier.weight", 0),
            in_chans=_dim(checkpoint, "conv_stem.weight", 1),
        )
    check_architecture(checkpoint.uri, checkpoint.meta, name)
    return checkpoint.meta


def _dim(checkpoint: Checkpoint, key: str, axis: int) -> int:
    tensor = checkpoint.state_dict.get(key)
    if tensor is None or tensor.ndim <= axis:
        raise WeightsError(f"weights from {checkpoint.uri} have no usable {key!r}; not a GhostNet checkpoint?")
    return int(tensor.shape[axis])


def _check_override(param: str, requested: int | None, in_checkpoint: int, uri: str) -> None:
    if requested is not None and requested != in_checkpoint:
        raise ValueError(
            f"{param}={requested} conflicts with the checkpoint {uri}, which has {param}={in_checkpoint}; "
            f"leave {param} unset to use the checkpoint's value"
        )
