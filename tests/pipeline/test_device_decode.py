"""JPEGs left encoded for the model actor (nvJPEG on a GPU; libjpeg through the same torchvision
call on a CPU actor, which is how this path runs in CI) agree with the Pillow path."""

from __future__ import annotations

import numpy as np
import pyarrow.dataset as pads
import pytest
import torch

import ghostnet
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
    ],
)
def test_what_the_device_would_get_wrong_stays_on_the_cpu(name, data):
    left = decode.decode_image(data, META, leave_jpeg=True)
    on_cpu = decode.decode_image(data, META)

    assert left.jpeg is None
    assert (left.status, left.error) == (on_cpu.status, on_cpu.error)
    assert (left.pixels is None and on_cpu.pixels is None) or np.array_equal(left.pixels, on_cpu.pixels)


def test_a_jpeg_the_device_refuses_falls_back_alone():
    good = corpus.encode(corpus.gradient(80, 60), "JPEG")
    bad = good[:200] + b"\x00" * 300 + b"\xff\xd9"
    raw = decode.decode_image(corpus.encode(corpus.gradient(50, 40), "PNG"), META).pixels.tobytes()

    out = decode.decode_on_device([good, bad, raw], ["jpeg", "jpeg", "raw"], META, torch.device("cpu"))

    assert [d.status for d in out][0::2] == ["ok", "ok"]
    assert out[1].status in ("ok", "decode_error")
    assert all(d.pixels is None or tuple(d.pixels.shape) == (224, 224, 3) for d in out)


@pytest.mark.usefixtures("ray_local")
def test_device_and_cpu_decode_give_the_same_rows(tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    for name, data in {**jpeg_cases(), "broken.jpg": b"\xff\xd8\xff garbage"}.items():
        (images / (name if name.endswith(".jpg") else f"{name}.jpg")).write_bytes(data)
    (images / "plain.png").write_bytes(corpus.encode(corpus.gradient(90, 70), "PNG"))
    base = RunConfig(inputs=(str(images),), output="", model="ghostnet_050", weights="random",
                     num_classes=7, max_error_rate=0.5, reprocess=True)

    tables = {}
    for mode in ("cpu", "device"):
        out = tmp_path / mode
        assert run(base.replace(output=str(out), decode=mode)).committed
        tables[mode] = {r["uri"]: r for r in pads.dataset(str(out / "predictions"), partitioning="hive")
                        .to_table().to_pylist()}

    assert tables["cpu"].keys() == tables["device"].keys()
    for uri, cpu in tables["cpu"].items():
        device = tables["device"][uri]
        assert (cpu["status"], cpu["error"]) == (device["status"], device["error"]), uri
        if cpu["status"] == "ok":
            assert abs(cpu["score"] - device["score"]) < 0.02, uri
