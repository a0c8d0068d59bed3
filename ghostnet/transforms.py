"""timm's eval preprocessing in two steps: PIL resize + crop to uint8 (CPU workers), then normalise.

`normalize(stack([resize_crop(img, meta)]), meta, ...)` equals
`timm.data.create_transform(**resolve_data_config({}, model=timm_model))(img)` for the same settings.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from .meta import ModelMeta

__all__ = ["normalize", "resize_crop", "resize_crop_tensor", "resizes_in_full", "to_device"]

_PIL_MODES = {1: "L", 3: "RGB"}
# Resized images up to this size are made whole and cropped, exactly as torchvision does (at a
# 256 px short side, aspect ratios up to 64:1); larger ones only where the crop comes from.
FULL_RESIZE_PIXELS = 1 << 22


def resize_crop(image: Image.Image, meta: ModelMeta) -> np.ndarray:
    """Resize (shorter side to `floor(size / crop_pct)`) and centre-crop to `meta.input_size`.

    The image is first converted to RGB (or L for one-channel models), as timm's loaders do.
    Sizes follow torchvision's `Resize(int)` and `CenterCrop` arithmetic, and the resize is the
    same PIL call torchvision makes, so pixels match exactly; except for aspect ratios over 64:1
    (see `resizes_in_full`), where only the region the crop comes from is resized.

    Returns:
        uint8 array of shape (height, width, channels).

    Raises:
        ValueError: `meta` is not an image model with 1 or 3 channels.
    """
    if meta.modality != "image" or meta.in_chans not in _PIL_MODES:
        raise ValueError(
            f"resize_crop needs an image model with 1 or 3 channels, got modality={meta.modality!r} "
            f"and in_chans={meta.in_chans}"
        )
    image = image.convert(_PIL_MODES[meta.in_chans])
    _, crop_h, crop_w = meta.input_size
    new_h, new_w = _resized_size(image.height, image.width, crop_h, crop_w, meta.crop_pct)
    top = round((new_h - crop_h) / 2.0)
    left = round((new_w - crop_w) / 2.0)
    resample = Image.Resampling[meta.interpolation.upper()]
    if not resizes_in_full(image.height, image.width, meta):
        # Resize only the source region the crop comes from (a long thin strip would otherwise
        # become, e.g., 960000 x 256 on the way to 224 x 224). The same crop to a few levels:
        # Pillow may run its two passes in the other order, which rounds differently.
        scale_y, scale_x = image.height / new_h, image.width / new_w
        box = (left * scale_x, top * scale_y, (left + crop_w) * scale_x, (top + crop_h) * scale_y)
        image = image.resize((crop_w, crop_h), resample, box=box)
    else:
        if (new_h, new_w) != (image.height, image.width):
            image = image.resize((new_w, new_h), resample)
        image = image.crop((left, top, left + crop_w, top + crop_h))
    pixels = np.array(image, dtype=np.uint8)
    return pixels.reshape(crop_h, crop_w, meta.in_chans)


def resizes_in_full(height: int, width: int, meta: ModelMeta) -> bool:
    """Whether `resize_crop` makes the whole resized image of a `width` x `height` image, as
    torchvision does: for all but extreme aspect ratios (over 64:1 at a 256 px short side)."""
    _, crop_h, crop_w = meta.input_size
    new_h, new_w = _resized_size(height, width, crop_h, crop_w, meta.crop_pct)
    return new_h * new_w <= FULL_RESIZE_PIXELS


def _resized_size(height: int, width: int, crop_h: int, crop_w: int, crop_pct: float) -> tuple[int, int]:
    scale_h, scale_w = math.floor(crop_h / crop_pct), math.floor(crop_w / crop_pct)
    if scale_h == scale_w:
        # torchvision Resize(int): the shorter side becomes `scale`, the longer one is truncated.
        short, long = sorted((height, width))
        new_long = int(scale_h * long / short)
        return (new_long, scale_h) if height > width else (scale_h, new_long)
    # timm ResizeKeepRatio for non-square targets: both sides at least the target, rounded.
    ratio = min(height / scale_h, width / scale_w)
    return round(height / ratio), round(width / ratio)


def normalize(
    batch: np.ndarray | torch.Tensor,
    meta: ModelMeta,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    channels_last: bool = False,
) -> torch.Tensor:
    """Turn a uint8 NHWC batch into a normalised float NCHW tensor on `device`.

    The uint8 batch is moved first (4x less to copy; see `to_device`), then scaled to [0, 1] and normalised with
    `meta.mean` / `meta.std` in float32 before casting to `dtype`.

    Raises:
        ValueError: not a uint8 array of shape (N, H, W, meta.in_chans).
    """
    pixels = torch.as_tensor(batch)
    if pixels.dtype != torch.uint8 or pixels.ndim != 4 or pixels.shape[-1] != meta.in_chans:
        raise ValueError(
            f"expected a uint8 batch of shape (N, H, W, {meta.in_chans}), "
            f"got {pixels.dtype} with shape {tuple(pixels.shape)}"
        )
    x = to_device(pixels, device).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(meta.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(meta.std, device=x.device).view(1, -1, 1, 1)
    x = x.sub_(mean).div_(std).to(dtype)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`tensor` on `device`; a host-to-GPU copy goes from pinned memory and does not block the host.

    From pageable memory `non_blocking=True` is synchronous (the driver stages the copy), so a host
    tensor bound for CUDA is first copied into page-locked memory (PyTorch's caching host allocator
    reuses those buffers and keeps each one until its copy has finished). The copy is queued on the
    current stream, so the kernels that use the result on that stream wait for it. Any other move,
    CPU to CPU included, is a plain `.to(device)`: nothing changes there.
    """
    device = torch.device(device)
    if device.type == "cuda" and tensor.device.type == "cpu":
        if not tensor.is_pinned():
            tensor = tensor.pin_memory()
        return tensor.to(device, non_blocking=True)
    return tensor.to(device)


def _grey(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 to (N, 1, H, W): ITU-R 601-2 luma in Pillow's fixed point, rounding included."""
    r, g, b = rgb.to(torch.int32).unbind(1)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8).unsqueeze(1)


def resize_crop_tensor(images: torch.Tensor, meta: ModelMeta) -> torch.Tensor:
    """`resize_crop` for decoded uint8 tensors on any device, e.g. straight from nvJPEG.

    Takes one (C, H, W) image or a batch (N, C, H, W) of images of one size, so a batch of
    same-sized photos is resized in one call. The same sizes and crop as `resize_crop`; the
    resize is torch's antialiased interpolation (bicubic uses PIL's a=-0.5 kernel there),
    rounded back to uint8 like PIL. Pixels agree with the PIL path to a few levels, not exactly.

    RGB input to a one-channel model is made grey first, with Pillow's `convert("L")` arithmetic,
    as `resize_crop` converts before resizing.

    Returns:
        uint8 tensor (H, W, meta.in_chans), or (N, H, W, meta.in_chans) for a batch, on the input's device.
    """
    single = images.ndim == 3
    x = images.unsqueeze(0) if single else images
    if meta.in_chans == 1 and x.shape[1] == 3:
        x = _grey(x)
    if x.shape[1] != meta.in_chans:
        raise ValueError(f"expected images with {meta.in_chans} channels (or RGB for a grey model), got {x.shape[1]}")
    _, crop_h, crop_w = meta.input_size
    height, width = x.shape[-2:]
    new_h, new_w = _resized_size(height, width, crop_h, crop_w, meta.crop_pct)
    if (new_h, new_w) != (height, width):
        mode = meta.interpolation if meta.interpolation in ("bilinear", "bicubic") else "bilinear"
        x = torch.nn.functional.interpolate(x.float(), size=(new_h, new_w), mode=mode, antialias=True)
        x = x.round_().clamp_(0, 255).to(torch.uint8)
    top = round((new_h - crop_h) / 2.0)
    left = round((new_w - crop_w) / 2.0)
    x = x[:, :, top : top + crop_h, left : left + crop_w].permute(0, 2, 3, 1)
    return x[0] if single else x
