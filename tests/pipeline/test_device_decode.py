"""JPEGs left encoded for the model actor (nvJPEG on a GPU; libjpeg through the same torchvision
call on a CPU actor, which is how this path runs in CI) agree with the Pillow path."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import ghostnet
from analytics.views import query
from demo import samples
from ghostnet.pretrained import PRETRAINED, pretrained_path
from pipeline import decode
from pipeline.config import RunConfig
from pipeline.run import run
from tests import corpus

META = ghostnet.create_model("ghostnet_050").meta


def jpeg_cases() -> dict[str, bytes]:
    photos = corpus.photos()
    cases = {name: corpus.encode(image, "JPEG", quality=92) for name, image in photos.items()}
    cases["progressive"] = corpus.encode(photos["china"], "JPEG", quality=90, progressive=True)
    cases["grey"] = corpus.encode(photos["flower"].convert("L"), "JPEG")
    return cases


@pytest.mark.parametrize("name", sorted(jpeg_cases()))
def test_device_decode_matches_pillow_within_a_few_levels(name):
    data = jpeg_cases()[name]
    left = decode.decode_image(data, META, leave_jpeg=True)
    [device] = decode.decode_on_device([left.jpeg], ["jpeg"], META, torch.device("cpu"))
    reference = decode.decode_image(data, META).pixels

    assert left.jpeg == data and device.status == "ok"
    diff = np.abs(device.pixels.numpy().astype(int) - reference.astype(int))
    assert diff.mean() < 0.5 and diff.max() <= 8


@pytest.mark.parametrize(
    "name,data",
    [
        ("cmyk", corpus.encode(corpus.gradient(64, 48).convert("CMYK"), "JPEG")),
        ("rotated", corpus.exif_rotated()),
        ("truncated", corpus.encode(corpus.gradient(300, 200), "JPEG")[:2000]),
        ("png", corpus.encode(corpus.gradient(64, 48), "PNG")),
        ("huge", corpus.encode(corpus.gradient(1200, 1100), "JPEG")),
        ("strip", corpus.encode(corpus.gradient(30_000, 8), "JPEG")),  # resized whole, 3 GB of floats
    ],
)
def test_what_the_device_would_get_wrong_stays_on_the_cpu(name, data):
    left = decode.decode_image(data, META, leave_jpeg=True)
    on_cpu = decode.decode_image(data, META)

    assert left.jpeg is None
    assert (left.status, left.error) == (on_cpu.status, on_cpu.error)
    assert (left.pixels is None and on_cpu.pixels is None) or np.array_equal(left.pixels, on_cpu.pixels)


def test_a_jpeg_the_device_refuses_falls_back_alone(monkeypatch):
    """docs/reliability.md, Bad inputs: "a JPEG nvJPEG refuses: decoded by Pillow for that item alone".

    The refused one is real: a lossless greyscale JPEG, which Pillow decodes and libjpeg-turbo will
    not convert to RGB. It equals its Pillow decode; the others are decoded by the device decoder
    and resized there in one batch, and Pillow sees only the refused one.
    """
    goods = [corpus.encode(corpus.gradient(80, 60, seed=i), "JPEG") for i in range(3)]
    refused = corpus.lossless_jpeg(np.asarray(corpus.gradient(56, 40).convert("L")))
    raw = decode.decode_image(corpus.encode(corpus.gradient(50, 40), "PNG"), META).pixels.tobytes()
    assert decode.decode_image(refused, META, leave_jpeg=True).jpeg == refused, "it must reach the device"
    pillow = decode.decode_image(refused, META)
    references = [decode.decode_image(good, META).pixels.astype(int) for good in goods]
    on_device, resized = spy(monkeypatch, "decode_jpeg"), spy(monkeypatch, "resize_crop_tensor")
    on_pillow = spy(monkeypatch, "decode_image")

    encoded = [goods[0], refused, goods[1], raw, goods[2]]
    out = decode.decode_on_device(encoded, ["jpeg", "jpeg", "jpeg", "raw", "jpeg"], META, torch.device("cpu"))

    assert (out[1].status, out[1].error) == (pillow.status, pillow.error) == ("ok", None)
    assert np.array_equal(out[1].pixels.numpy(), pillow.pixels)
    assert [args[0] for args, _ in on_pillow] == [refused], "Pillow decodes the refused JPEG and nothing else"
    batches = [[bytes(t.numpy()) for t in args[0]] for args, _ in on_device]
    assert all(isinstance(args[0], list) for args, _ in on_device), "every decode is a batched call"
    assert batches[0] == [goods[0], refused, goods[1], goods[2]] and [refused] in batches
    assert [goods[1], goods[2]] in batches, "a refused batch is split, so the rest still decode together"
    [(batch, _)] = [args for args, _ in resized]
    assert tuple(batch.shape) == (3, 3, 60, 80), "the three good JPEGs are resized in one call"
    for i, reference in zip((0, 2, 4), references, strict=True):
        assert out[i].status == "ok" and tuple(out[i].pixels.shape) == (224, 224, 3)
        assert np.abs(out[i].pixels.numpy().astype(int) - reference).max() <= 8
    assert out[3].status == "ok" and out[3].pixels.numpy().tobytes() == raw


def spy(monkeypatch, name: str) -> list[tuple[tuple, dict]]:
    """Record every call of ``pipeline.decode.<name>`` and let it run as it is."""
    calls, real = [], getattr(decode, name)

    def record(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(decode, name, record)
    return calls


def labeled_jpegs() -> dict[str, bytes]:
    """Pictures the shipped demo model tells apart (two per class), and the photos, small enough
    for the device path; baseline, progressive and grey."""
    rng = random.Random(5)
    cases = {}
    for i, shape in enumerate(samples.IMAGE_CLASSES * 2):
        image = samples.make_image(shape, rng, size=(96, 150)[i % 2])
        cases[f"{shape}-{i}.jpg"] = corpus.encode(image, "JPEG", quality=90, progressive=i % 3 == 0)
    for name, photo in corpus.photos().items():
        photo.thumbnail((180, 180))
        cases[f"{name}.jpg"] = corpus.encode(photo, "JPEG", quality=92)
        cases[f"{name}-grey.jpg"] = corpus.encode(photo.convert("L"), "JPEG")
    return cases


# Measured on these 24 items (torchvision's libjpeg): every top-1 label agrees, the top-1 scores differ
# by at most 0.018 (resizing to the demo model's 48 px magnifies the few-level pixel differences),
# and the closest top-1 margin on the CPU path is 0.06.
SCORE_TOLERANCE = 0.05


@pytest.mark.usefixtures("ray_local")
def test_device_and_cpu_decode_give_the_same_rows(tmp_path):
    """README, GPUs: "JPEGs are decoded on the GPU (nvJPEG, batched, with a per-item Pillow fallback)";
    the rows equal those of the CPU path: same statuses and errors, the same top-1 label, the same
    top-1 score to SCORE_TOLERANCE. Labels by the shipped demo model, which tells its pictures apart,
    so that a wrong device decode changes labels (a random model gives every input the same one)."""
    images = tmp_path / "in"
    images.mkdir()
    for name, data in {**labeled_jpegs(), "broken.jpg": b"\xff\xd8\xff garbage"}.items():
        (images / name).write_bytes(data)
    (images / "plain.png").write_bytes(corpus.encode(corpus.gradient(90, 70), "PNG"))
    demo = PRETRAINED["demo-image"]
    base = RunConfig(inputs=(str(images),), output="", model=demo.architecture,
                     weights=str(pretrained_path(demo.name)), max_error_rate=0.5, reprocess=True)

    tables = {}
    for mode in ("cpu", "device"):
        out = str(tmp_path / mode)
        assert run(base.replace(output=out, decode=mode)).committed
        result = query(out, "SELECT uri, status, error, label, topk_ids, topk_scores FROM predictions")
        tables[mode] = {row[0]: dict(zip(result.columns, row, strict=True)) for row in result.rows}

    assert tables["cpu"].keys() == tables["device"].keys()
    for uri, cpu in tables["cpu"].items():
        device = tables["device"][uri]
        assert (cpu["status"], cpu["error"]) == (device["status"], device["error"]), uri
        if cpu["status"] == "ok":
            assert (cpu["label"], cpu["topk_ids"][0]) == (device["label"], device["topk_ids"][0]), uri
            assert abs(cpu["topk_scores"][0] - device["topk_scores"][0]) < SCORE_TOLERANCE, uri
