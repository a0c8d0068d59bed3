"""The image input kind (:data:`pipeline.kinds.KINDS`): bytes to model-ready pixels, one item at
a time, never raising for a bad item.

Each item becomes a :class:`Decoded` with a status from :class:`pipeline.schema.Status`
and, when ``ok``, a uint8 HWC crop at the model's input size. Normalization happens on the
model actor (:data:`FRONT_END`), so what crosses the object store is 1 byte per pixel.

A run with several models decodes each item once for all of them: models whose crop is the same
(input size, crop, interpolation: :func:`decode_key`) share one decode group, and an item is
fetched and decoded once, then cropped once per group (:func:`decode_for_groups`), one row each.
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from ghostnet import ModelMeta
from ghostnet.transforms import normalize, resize_crop, resize_crop_tensor, resizes_in_full
from pipeline import storage
from pipeline.config import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS, RunConfig
from pipeline.kinds import Decoder, FrontEnd
from pipeline.metrics import Reporter
from pipeline.rows import decoded_rows
from pipeline.schema import Status

# JPEGs whose shorter side is at least this many times the resize target are decoded at a
# reduced DCT scale (PIL draft mode); smaller ones decode in full, exactly as timm does.
DRAFT_FACTOR = 4
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Decoded:
    status: Status
    error: str | None = None
    pixels: np.ndarray | torch.Tensor | None = None  # uint8 (H, W, C) crop
    jpeg: bytes | None = None  # left encoded, for the model actor to decode on its device


def _fail(status: Status, error: str) -> Decoded:
    return Decoded(status, error)


def decode_key(meta: ModelMeta) -> tuple[object, ...]:
    """What a decoded crop depends on (mean and std are applied on the actor, per model)."""
    return (meta.input_size, meta.crop_pct, meta.interpolation)


def decode_for_groups(data: bytes | None, metas: Sequence[ModelMeta], *, max_pixels: int = DEFAULT_MAX_PIXELS,
                      leave_jpeg: bool = False) -> list[Decoded]:
    """:func:`decode_image` for each of ``metas`` (the run's decode groups), decoding the bytes once
    for all the groups that decode them the same way (at the same draft scale)."""
    if len(metas) == 1:
        return [decode_image(data, metas[0], max_pixels=max_pixels, leave_jpeg=leave_jpeg)]
    return _guarded(lambda d: _decode_groups(d, metas, max_pixels, leave_jpeg), data, len(metas))


def decode_image(
    data: bytes | None,
    meta: ModelMeta,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    leave_jpeg: bool = False,
) -> Decoded:
    """Decode, orient, convert to RGB, resize and centre-crop one image.

    With ``leave_jpeg``, a JPEG the device decoder takes as it is (RGB or grey, upright, not
    large enough for draft mode) is only checked, and comes back as ``jpeg`` bytes.
    """
    return _guarded(lambda d: [_decode(d, meta, max_pixels, leave_jpeg)], data, 1)[0]


def _guarded(decode: Callable[[bytes], list[Decoded]], data: bytes | None, groups: int) -> list[Decoded]:
    """``decode(data)``, or for every group the same failure when the bytes are not an image it can take."""
    if data is None:
        return [_fail(Status.READ_ERROR, "no bytes were read")] * groups
    if len(data) == 0:
        return [_fail(Status.EMPTY, "zero-byte file")] * groups
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return decode(data)
    except Image.DecompressionBombError as exc:
        # Pillow's own guard (2x Image.MAX_IMAGE_PIXELS) holds for formats other than JPEG,
        # whatever --max-pixels says; an application that needs bigger ones raises Pillow's limit.
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6
        failed = _fail(Status.TOO_LARGE, f"refused as a decompression bomb: over Pillow's limit of {limit:.0f} "
                                         f"megapixels for this format ({exc})")
    except UnidentifiedImageError:
        failed = _fail(Status.DECODE_ERROR, "not an image Pillow can identify (corrupt or wrong format)")
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        failed = _fail(Status.DECODE_ERROR, f"{type(exc).__name__}: {exc}")
    except MemoryError:
        failed = _fail(Status.TOO_LARGE, "decoding ran out of memory")
    return [failed] * groups


def _open(data: bytes) -> Image.Image:
    """``Image.open``, except that a JPEG skips Pillow's decompression-bomb check: draft mode
    decodes it at a reduced scale, and ``--max-pixels`` then holds for the size it decodes at.
    Other formats keep Pillow's check, and the process-wide limit is left as it is."""
    if data.startswith(b"\xff\xd8\xff"):
        return JpegImagePlugin.JpegImageFile(io.BytesIO(data))
    return Image.open(io.BytesIO(data))


def _decode(data: bytes, meta: ModelMeta, max_pixels: int, leave_jpeg: bool) -> Decoded:
    image = _open(data)
    device_ready = leave_jpeg and _device_decodable(image, meta, data)
    if image.format == "JPEG" and not device_ready:
        _draft(image, meta)
    refused = _refused(image, max_pixels)
    if refused is not None:
        return refused
    if device_ready:
        return Decoded(Status.OK, jpeg=data)
    return Decoded(Status.OK, pixels=resize_crop(_upright_rgb(image), meta))


def _decode_groups(data: bytes, metas: Sequence[ModelMeta], max_pixels: int, leave_jpeg: bool) -> list[Decoded]:
    """Each group's :func:`_decode`, the image decoded once per distinct draft scale (once, unless
    the groups' sizes differ enough for draft mode to pick other scales)."""
    image = _open(data)
    found: list[Decoded | None] = [None] * len(metas)
    scales: dict[tuple[int, int] | None, list[int]] = {}
    for i, meta in enumerate(metas):
        if leave_jpeg and _device_decodable(image, meta, data):
            found[i] = _refused(image, max_pixels) or Decoded(Status.OK, jpeg=data)
        else:
            scales.setdefault(_draft_size(image, meta), []).append(i)
    for size, groups in scales.items():
        image = _open(data)
        if size is not None:
            image.draft("RGB", size)
        refused = _refused(image, max_pixels)
        if refused is not None:
            found = [refused if i in groups else d for i, d in enumerate(found)]
            continue
        rgb = _upright_rgb(image)
        for i in groups:
            found[i] = Decoded(Status.OK, pixels=resize_crop(rgb, metas[i]))
    return [d for d in found if d is not None]


def _refused(image: Image.Image, max_pixels: int) -> Decoded | None:
    width, height = image.size
    if width * height > max_pixels:
        return _fail(
            Status.TOO_LARGE,
            f"image is {width}x{height} = {width * height / 1e6:.0f} megapixels decoded, over the "
            f"limit of {max_pixels / 1e6:.0f} (raise --max-pixels to allow it)",
        )
    if width < 1 or height < 1:
        return _fail(Status.DECODE_ERROR, f"image has no pixels ({width}x{height})")
    return None


def _upright_rgb(image: Image.Image) -> Image.Image:
    image.load()
    return _to_rgb(ImageOps.exif_transpose(image) or image)


def _device_decodable(image: Image.Image, meta: ModelMeta, data: bytes) -> bool:
    """What nvJPEG decodes as PIL would: complete RGB/grey JPEGs with no EXIF rotation, not huge.

    A JPEG without its end marker is left to Pillow, which refuses truncated files where
    libjpeg-based decoders would return a partly grey image. So is a long thin strip, which the
    device would resize whole (Pillow resizes only the part the crop comes from).
    """
    return (
        image.format == "JPEG"
        and data.rstrip(b"\0").endswith(b"\xff\xd9")
        and image.mode in ("RGB", "L")
        and image.getexif().get(EXIF_ORIENTATION, 1) == 1
        and min(image.size) < DRAFT_FACTOR * _resize_target(meta)
        and resizes_in_full(image.height, image.width, meta)
    )


def _draft(image: Image.Image, meta: ModelMeta) -> None:
    size = _draft_size(image, meta)
    if size is not None:
        image.draft("RGB", size)


def _draft_size(image: Image.Image, meta: ModelMeta) -> tuple[int, int] | None:
    """The size draft mode is asked for (a JPEG at least DRAFT_FACTOR times the target), or None."""
    target = _resize_target(meta)
    if image.format == "JPEG" and min(image.size) >= DRAFT_FACTOR * target:
        return (target * 2, target * 2)
    return None


def _resize_target(meta: ModelMeta) -> int:
    return int(max(meta.input_size[1:]) / meta.crop_pct)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB as timm's loader makes it (``convert('RGB')``), but 16-bit grey scaled, not clipped."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        grey = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if grey.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(grey / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "F":
        grey = np.nan_to_num(np.asarray(image, dtype=np.float64))
        span = grey.max(initial=0) - grey.min(initial=0)
        scaled = (grey - grey.min(initial=0)) / span * 255.0 if span > 0 else np.zeros_like(grey)
        image = Image.fromarray(scaled.astype(np.uint8), "L")
    return image.convert("RGB")


def read_and_decode(
    batch: pa.Table,
    *,
    metas: Sequence[ModelMeta],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    read_threads: int = 8,
    leave_jpegs: bool = False,
    reporter: Reporter | None = None,
) -> pa.Table:
    """The decode stage (Ray tasks): items in, one row of :data:`DECODED` per item and decode group
    (``metas``: one model's metadata per group) out, the rows of each group together.

    An item decoded here travels as its raw uint8 crop (``encoding`` ``raw``). With
    ``leave_jpegs`` (GPU actors), a JPEG the device decodes as Pillow would is only checked
    here and travels as the file itself (``encoding`` ``jpeg``), for :func:`decode_on_device`.
    ``reporter`` gets the seconds spent fetching and decoding, summed over the items.
    """
    uris = batch["uri"].to_pylist()
    sizes = batch["size_bytes"].to_pylist()
    etags = batch["etag"].to_pylist()

    def one(uri: str, size: int | None, etag: str | None) -> tuple[list[Decoded], float, float]:
        return _read_and_decode_one(uri, size, etag, metas, max_pixels, max_file_bytes, leave_jpegs)

    with ThreadPoolExecutor(max_workers=read_threads) as pool:
        timed = list(pool.map(one, uris, sizes, etags))
    if reporter is not None:
        reporter.stage("fetch", sum(f for _, f, _ in timed))
        reporter.stage("decode", sum(d for _, _, d in timed))
    n = len(uris)
    groups = len(metas)
    decoded = [d[g] for g in range(groups) for d, _, _ in timed]
    encoding, encoded = _encoded(decoded)
    return decoded_rows(
        batch.take(pa.array(np.tile(np.arange(n), groups))) if groups > 1 else batch,
        segment=pa.array(np.zeros(n * groups, np.int32)),
        start_s=pa.nulls(n * groups, pa.float32()),
        end_s=pa.nulls(n * groups, pa.float32()),
        status=pa.array([d.status.value for d in decoded], pa.string()),
        error=pa.array([d.error for d in decoded], pa.string()),
        encoding=encoding,
        encoded=encoded,
        last=pa.array(np.ones(n * groups, bool)),
        group=pa.array(np.repeat(np.arange(groups, dtype=np.int32), n)),
    )


def _encoded(decoded: list[Decoded]) -> tuple[pa.Array, pa.Array]:
    encoding: list[str | None] = []
    encoded: list[bytes | None] = []
    for d in decoded:
        if d.jpeg is not None:
            encoding.append("jpeg")
            encoded.append(d.jpeg)
        elif d.pixels is not None:
            encoding.append("raw")
            encoded.append(np.ascontiguousarray(d.pixels).tobytes())
        else:
            encoding.append(None)
            encoded.append(None)
    return pa.array(encoding, pa.string()), pa.array(encoded, pa.binary())


def raw_pixels(encoded: list[bytes], meta: ModelMeta) -> np.ndarray:
    """Raw uint8 crops (``encoding`` ``raw``) as one (n, H, W, C) array, C the model's channels."""
    c, h, w = meta.input_size
    return np.frombuffer(bytearray(b"".join(encoded)), dtype=np.uint8).reshape(len(encoded), h, w, c)


def decode_stage(config: RunConfig, metas: list[ModelMeta], *,
                 on_device: bool) -> tuple[Callable[..., Any], dict[str, Any]]:
    """:func:`read_and_decode` with the run's limits for its decode groups; ``on_device``: JPEGs the
    actors' GPUs decode travel encoded."""
    return read_and_decode, {"metas": metas, "max_pixels": config.max_pixels, "max_file_bytes": config.max_file_bytes,
                             "leave_jpegs": on_device}


def model_input(meta: ModelMeta, min_size: int, device: torch.device,
                dtype: torch.dtype) -> Callable[[np.ndarray | torch.Tensor], torch.Tensor]:
    """uint8 crops with the model's channels, normalized, channels-last on ``device``."""
    return partial(normalize, meta=meta, device=device, dtype=dtype, channels_last=True)


def zero_pixels(meta: ModelMeta, rows: int) -> np.ndarray:
    c, h, w = meta.input_size
    return np.zeros((rows, h, w, c), np.uint8)


DECODER: Decoder = decode_stage
FRONT_END = FrontEnd(host_inputs=raw_pixels, model_input=model_input, example_input=zero_pixels,
                     decode_key=decode_key, device_decode=True)


def _read_and_decode_one(
    uri: str, size: int | None, etag: str | None, metas: Sequence[ModelMeta], max_pixels: int, max_file_bytes: int,
    leave_jpeg: bool
) -> tuple[list[Decoded], float, float]:
    """The item decoded for each group from the version that was listed (``etag``), fetched once,
    and the seconds its fetch and its decoding took."""
    groups = len(metas)
    if size is not None and size > max_file_bytes:
        return [_fail(
            Status.TOO_LARGE,
            f"file is {size / 2**20:.0f} MiB, over the limit of {max_file_bytes / 2**20:.0f} MiB",
        )] * groups, 0.0, 0.0
    started = time.perf_counter()
    try:
        data = storage.read_bytes(uri, etag=etag)
    except storage.ObjectChanged:
        return [_fail(Status.READ_ERROR, storage.CHANGED)] * groups, 0.0, 0.0
    except FileNotFoundError:
        return [_fail(Status.READ_ERROR, "object not found (deleted or moved after listing)")] * groups, 0.0, 0.0
    except Exception as exc:  # noqa: BLE001 - any failure to fetch is this item's read_error
        return [_fail(Status.READ_ERROR, storage.redact(f"{type(exc).__name__}: {exc}"))] * groups, 0.0, 0.0
    fetched = time.perf_counter()
    decoded = decode_for_groups(data, metas, max_pixels=max_pixels, leave_jpeg=leave_jpeg)
    return decoded, fetched - started, time.perf_counter() - fetched


def decode_on_device(
    encoded: Sequence[bytes],
    encoding: Sequence[str],
    meta: ModelMeta,
    device: torch.device,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[Decoded]:
    """The model actor's half of ``leave_jpegs``: JPEGs decoded in one batched call on ``device``
    (nvJPEG on a GPU), resized and cropped there; raw crops moved there as they are. A JPEG the
    device decoder refuses falls back to Pillow for that item alone.
    """
    c, h, w = meta.input_size
    results: list[Decoded | None] = [None] * len(encoded)
    for i, (data, kind) in enumerate(zip(encoded, encoding, strict=True)):
        if kind == "raw":
            pixels = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(h, w, c)
            results[i] = Decoded(Status.OK, pixels=pixels.to(device))
    jpegs = [i for i, kind in enumerate(encoding) if kind == "jpeg"]
    images = dict(zip(jpegs, _device_jpegs([encoded[i] for i in jpegs], device), strict=True))
    same_size: dict[tuple[int, ...], list[int]] = {}
    decodable = {i: image for i, image in images.items() if image is not None}
    for i, image in decodable.items():
        same_size.setdefault(tuple(image.shape), []).append(i)
    for rows in same_size.values():
        crops = resize_crop_tensor(torch.stack([decodable[i] for i in rows]), meta)
        for i, crop in zip(rows, crops, strict=True):
            results[i] = Decoded(Status.OK, pixels=crop)
    for i in jpegs:
        if results[i] is None:
            cpu = decode_image(encoded[i], meta, max_pixels=max_pixels)
            moved = None if cpu.pixels is None else torch.as_tensor(cpu.pixels).to(device)
            results[i] = Decoded(cpu.status, cpu.error, moved)
    return [r if r is not None else _fail(Status.DECODE_ERROR, "nothing to decode") for r in results]


def _device_jpegs(datas: list[bytes], device: torch.device) -> list[torch.Tensor | None]:
    if not datas:
        return []
    return _decode_jpeg_batch([torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas], device)


def _decode_jpeg_batch(tensors: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """One batched decode; a batch the decoder refuses is split in halves until the JPEGs it
    refuses stand alone (``None``), so the rest still decode in batches."""
    try:
        return list(decode_jpeg(tensors, device=device))
    except RuntimeError:
        if len(tensors) == 1:
            return [None]
        half = len(tensors) // 2
        return _decode_jpeg_batch(tensors[:half], device) + _decode_jpeg_batch(tensors[half:], device)


def decode_jpeg(tensors: list[torch.Tensor], *, device: torch.device) -> list[torch.Tensor]:
    """torchvision's batched JPEG decoder (nvJPEG on a GPU), to RGB. torchvision is imported on first
    use: importing it costs a worker about as long as importing torch, and CPU workers never need it."""
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_jpeg as decode

    return list(decode(tensors, mode=ImageReadMode.RGB, device=device))
