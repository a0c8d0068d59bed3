"""Registered GhostNet variants, their default metadata, and the one way to build a model."""

from __future__ import annotations

import difflib
import fnmatch
import os
from dataclasses import dataclass

from .audio import DEFAULT_FRONTEND, check_frontend, spectrogram_shape
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


_BUILTIN_VARIANTS: tuple[tuple[str, float, Version], ...] = (
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
)
for _name, _width, _version in _BUILTIN_VARIANTS:
    _register(_name, _width, _version)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted, optionally filtered by a shell-style pattern such as "ghostnetv2_*"."""
    names = sorted(_VARIANTS)
    return names if pattern is None else fnmatch.filter(names, pattern)


def default_meta(
    name: str, *, num_classes: int = IMAGENET_CLASSES, in_chans: int | None = None, modality: str = "image"
) -> ModelMeta:
    """Default metadata for a model without a checkpoint that describes itself.

    Images: timm's eval preprocessing for GhostNet (224 px, crop 0.875, bicubic, ImageNet
    statistics), 3 channels by default; other channel counts use the channel average of the
    ImageNet mean and std. ImageNet labels for 1000 image classes, "0".."n-1" otherwise.

    Audio: `ghostnet.audio.DEFAULT_FRONTEND` (16 kHz, 1 s windows every 0.5 s, 64 x 101 log-mel),
    one channel, mean 0 and std 1 (the log-mel is used as it is), labels "0".."n-1".
    """
    _variant(name)
    if modality == "audio":
        return _default_audio_meta(name, num_classes, 1 if in_chans is None else in_chans)
    in_chans = 3 if in_chans is None else in_chans
    labels = imagenet_labels() if num_classes == IMAGENET_CLASSES else _numbered(num_classes)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    if in_chans != len(IMAGENET_MEAN):
        mean = (round(sum(IMAGENET_MEAN) / 3, 3),) * in_chans
        std = (round(sum(IMAGENET_STD) / 3, 3),) * in_chans
    return ModelMeta(
        architecture=name,
        num_classes=num_classes,
        in_chans=in_chans,
        labels=labels,
        modality=modality,
        input_size=(in_chans, 224, 224),
        mean=mean,
        std=std,
    )


def _default_audio_meta(name: str, num_classes: int, in_chans: int) -> ModelMeta:
    return ModelMeta(
        architecture=name,
        num_classes=num_classes,
        in_chans=in_chans,
        labels=_numbered(num_classes),
        modality="audio",
        input_size=(in_chans, *spectrogram_shape(DEFAULT_FRONTEND)),
        mean=(0.0,) * in_chans,
        std=(1.0,) * in_chans,
        audio=DEFAULT_FRONTEND,
    )


def _numbered(num_classes: int) -> tuple[str, ...]:
    return tuple(map(str, range(num_classes)))


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    modality: str | None = None,
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
        in_chans: Input channels. Default 3 (images) or 1 (audio), or the checkpoint's when
            `weights` is given.
        modality: "image" (default) or "audio" (log-mel front end, see `ghostnet.audio`); with
            `weights`, the checkpoint's, which a given value must match.
        weights: Local path, fsspec URL or `hf-hub:org/name`; its metadata (labels, preprocessing)
            replaces the defaults.
        weights_sha256: Expected digest of the weights file.

    Raises:
        ValueError: unknown name (with close matches), `num_classes` below 1,
            `num_classes`/`in_chans`/`modality` that disagree with the checkpoint, or an audio
            front end the architecture cannot take.
        WeightsError: the weights cannot be read, are unsafe or do not fit the architecture.
    """
    variant = _variant(name)
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    if weights is None:
        meta = default_meta(
            name, num_classes=num_classes or IMAGENET_CLASSES, in_chans=in_chans, modality=modality or "image"
        )
        return _build(variant, meta)
    checkpoint = read_checkpoint(weights, sha256=weights_sha256)
    meta = _checkpoint_meta(name, checkpoint, modality or "image")
    _check_override("num_classes", num_classes, meta.num_classes, checkpoint.uri)
    _check_override("in_chans", in_chans, meta.in_chans, checkpoint.uri)
    _check_override("modality", modality, meta.modality, checkpoint.uri)
    model = _build(variant, meta)
    load_state_dict_strict(model, checkpoint.state_dict, source=checkpoint.uri)
    model.weights_sha256 = checkpoint.sha256
    return model


def _build(variant: _Variant, meta: ModelMeta) -> GhostNet:
    model = GhostNet(
        width=variant.width,
        version=variant.version,
        num_classes=meta.num_classes,
        in_chans=meta.in_chans,
        meta=meta,
    )
    if meta.modality == "audio":
        check_frontend(meta, model.min_input_size)
    return model


def _variant(name: str) -> _Variant:
    try:
        return _VARIANTS[name]
    except KeyError:
        close = difflib.get_close_matches(name, _VARIANTS, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"available: {', '.join(list_models())}"
        raise ValueError(f"unknown model {name!r}; {hint}") from None


def _checkpoint_meta(name: str, checkpoint: Checkpoint, modality: str) -> ModelMeta:
    if checkpoint.meta is None:
        return default_meta(
            name,
            num_classes=_dim(checkpoint, "classifier.weight", 0),
            in_chans=_dim(checkpoint, "conv_stem.weight", 1),
            modality=modality,
        )
    check_architecture(checkpoint.uri, checkpoint.meta, name)
    return checkpoint.meta


def _dim(checkpoint: Checkpoint, key: str, axis: int) -> int:
    tensor = checkpoint.state_dict.get(key)
    if tensor is None or tensor.ndim <= axis:
        raise WeightsError(f"weights from {checkpoint.uri} have no usable {key!r}; not a GhostNet checkpoint?")
    return int(tensor.shape[axis])


def _check_override(param: str, requested: int | str | None, in_checkpoint: int | str, uri: str) -> None:
    if requested is not None and requested != in_checkpoint:
        raise ValueError(
            f"{param}={requested} conflicts with the checkpoint {uri}, which has {param}={in_checkpoint}; "
            f"leave {param} unset to use the checkpoint's value"
        )
