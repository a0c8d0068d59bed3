"""Preprocessing parity: normalize(resize_crop(img)) equals timm's eval transform."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config
from timm.data.transforms_factory import transforms_imagenet_eval

from ghostnet import ModelMeta, create_model, normalize, resize_crop
from ghostnet.transforms import resize_crop_tensor, to_device
from tests.corpus import photos

Transform = Callable[[Image.Image], torch.Tensor]

# (width, height), including a side far below the crop and both orientations.
IMAGE_SIZES = [(500, 375), (37, 301), (640, 480), (224, 224), (301, 37)]


def _image(width: int, height: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(width * 1000 + height)
    # Pure noise: any difference in resampling or crop offsets shows up.
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


def _ours(image: Image.Image, meta: ModelMeta) -> torch.Tensor:
    return normalize(resize_crop(image, meta)[None], meta)[0]


@pytest.fixture(scope="module")
def meta() -> ModelMeta:
    meta = create_model("ghostnet_100").meta
    assert meta is not None
    return meta


@pytest.fixture(scope="module")
def timm_transform() -> Transform:
    config = resolve_data_config({}, model=timm.create_model("ghostnet_100", pretrained=False))
    assert config["interpolation"] == "bicubic" and config["crop_pct"] == 0.875
    return create_transform(**config)


@pytest.mark.parametrize("size", IMAGE_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_matches_timm_eval_transform(size: tuple[int, int], meta: ModelMeta, timm_transform: Transform) -> None:
    image = _image(*size)
    expected = timm_transform(image)
    got = _ours(image, meta)
    assert got.shape == expected.shape == (3, 224, 224)
    assert (got - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_non_rgb_images_are_converted_like_timm_loaders(mode: str, meta: ModelMeta, timm_transform: Transform) -> None:
    image = _image(320, 200, mode)
    expected = timm_transform(image.convert("RGB"))
    assert (_ours(image, meta) - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize("size", [(500, 375), (37, 301)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_non_square_target_matches_timm(size: tuple[int, int], meta: ModelMeta) -> None:
    wide = dataclasses.replace(meta, input_size=(3, 160, 256), crop_pct=0.9, interpolation="bilinear")
    transform = transforms_imagenet_eval(
        img_size=(160, 256), crop_pct=0.9, interpolation="bilinear", mean=meta.mean, std=meta.std
    )
    image = _image(*size)
    got = _ours(image, wide)
    assert got.shape == (3, 160, 256)
    assert (got - transform(image)).abs().max().item() < 1e-5


@pytest.mark.parametrize("name", ["china", "flower", "grace_hopper"])
@pytest.mark.parametrize("strip", ["wide", "tall"])
def test_a_strip_resized_only_where_the_crop_comes_from_is_timms_to_a_few_levels(
    name: str, strip: str, meta: ModelMeta, timm_transform: Transform, monkeypatch
) -> None:
    """docs/reliability.md, Bad inputs: a long thin image is resized only where its crop comes from.
    Pillow then runs its two passes in another order, which rounds differently: measured on these
    strips, at most 7 levels on a pixel and 0.33 on average (the worst, 3 px wide). Forced here on
    strips timm can still resize whole; images up to FULL_RESIZE_PIXELS stay exact (tests above)."""
    from ghostnet import transforms

    photo = photos()[name]
    w, h = photo.size
    image = photo.crop((0, h // 2, w, h // 2 + 4) if strip == "wide" else (w // 2, 0, w // 2 + 3, h))
    monkeypatch.setattr(transforms, "FULL_RESIZE_PIXELS", 0)
    assert not transforms.resizes_in_full(image.height, image.width, meta)
    levels = ((_ours(image, meta) - timm_transform(image)) * torch.tensor(meta.std)[:, None, None] * 255).abs()
    assert levels.max().item() < 8.01 and levels.mean().item() < 0.5


def test_only_extreme_aspect_ratios_leave_the_exact_path(meta: ModelMeta) -> None:
    from ghostnet.transforms import resizes_in_full

    assert resizes_in_full(301, 37, meta) and resizes_in_full(20, 1280, meta)  # 64:1 is resized whole
    assert not resizes_in_full(20, 1300, meta) and not resizes_in_full(30_000, 8, meta)


def test_resize_crop_returns_uint8_hwc(meta: ModelMeta) -> None:
    pixels = resize_crop(_image(500, 375), meta)
    assert pixels.dtype == np.uint8 and pixels.shape == (224, 224, 3)


def test_normalize_layout_dtype_and_validation(meta: ModelMeta) -> None:
    batch = np.stack([resize_crop(_image(w, h), meta) for w, h in IMAGE_SIZES[:2]])
    out = normalize(batch, meta, "cpu", torch.bfloat16, channels_last=True)
    assert out.shape == (2, 3, 224, 224) and out.dtype == torch.bfloat16
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert normalize(batch, meta).is_contiguous()
    with pytest.raises(ValueError, match="uint8 batch of shape"):
        normalize(batch.astype(np.float32), meta)
    with pytest.raises(ValueError, match="uint8 batch of shape"):
        normalize(batch[0], meta)


def test_to_device_leaves_cpu_tensors_alone() -> None:
    pixels = torch.zeros(2, 4, 4, 3, dtype=torch.uint8)
    assert to_device(pixels, "cpu") is pixels
    assert not pixels.is_pinned()


def test_to_device_copies_to_cuda_from_pinned_memory_without_blocking(monkeypatch) -> None:
    """The CUDA branch's calls, recorded on a machine without a GPU: pin first, then an async copy."""
    calls: list[tuple] = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append(("pin",)) or self)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *args, **kwargs: calls.append(("to", args, kwargs)) or self)
    to_device(torch.zeros(2, 4, 4, 3, dtype=torch.uint8), torch.device("cuda"))
    assert calls == [("pin",), ("to", (torch.device("cuda"),), {"non_blocking": True})]


def test_resize_crop_tensor_makes_rgb_grey_for_a_one_channel_model_as_pillow_does(meta: ModelMeta) -> None:
    """The device path (`resize_crop_tensor`) gives a one-channel model the channels `resize_crop`
    gives it: Pillow's grey of the RGB image, then the resize; the grey step is exact."""
    grey_meta = dataclasses.replace(meta, in_chans=1, input_size=(1, *meta.input_size[1:]), mean=(0.5,), std=(0.5,))
    image = photos()["flower"].convert("RGB")
    rgb = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)

    on_device = resize_crop_tensor(rgb, grey_meta)
    by_pillow = resize_crop(image, grey_meta)

    assert on_device.shape == by_pillow.shape == (*grey_meta.input_size[1:], 1)
    assert (on_device.int() - torch.from_numpy(by_pillow).int()).abs().max() <= 3
    same_size = dataclasses.replace(grey_meta, crop_pct=1.0, input_size=(1, image.height, image.width))
    assert torch.equal(resize_crop_tensor(rgb, same_size)[..., 0], torch.from_numpy(np.asarray(image.convert("L"))))
