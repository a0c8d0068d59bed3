"""What ``decode_image`` makes of the awkward inputs docs/reliability.md names: each claim checked
against the pixels it promises, and against the wrong pixels it rules out."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import ghostnet
from ghostnet.transforms import resize_crop
from pipeline.decode import decode_image
from tests import corpus

META = ghostnet.create_model("ghostnet_050").meta  # 224 crop of a 256 resize, bicubic


def animated_gif(first: Image.Image, second: Image.Image) -> bytes:
    out = io.BytesIO()
    first.save(out, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    return out.getvalue()


def frames(gif: bytes) -> list[Image.Image]:
    image = Image.open(io.BytesIO(gif))
    found = []
    for index in range(image.n_frames):
        image.seek(index)
        found.append(image.convert("RGB"))
    return found


def test_an_animated_gif_is_labeled_by_its_first_frame():
    """docs/reliability.md, Bad inputs: "GIF (animated: first frame)" → ok, the first frame's pixels."""
    gif = animated_gif(corpus.gradient(300, 260, seed=1), corpus.gradient(300, 260, seed=2).rotate(90))
    first, second = (resize_crop(frame, META) for frame in frames(gif))

    decoded = decode_image(gif, META)

    assert decoded.status == "ok"
    assert np.array_equal(decoded.pixels, first)
    assert not np.array_equal(decoded.pixels, second)


def test_a_16_bit_grey_png_is_scaled_not_clipped():
    """docs/reliability.md, Bad inputs: "16-bit grey PNG (scaled, not clipped)" → ok; a ramp over the
    full 16-bit range becomes the full 8-bit ramp (value v → v * 255 / 65535), not a white image."""
    ramp = np.tile(np.arange(256, dtype=np.uint16) * 257, (256, 1))  # 0, 257, ..., 65535 across a row
    png = corpus.encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(png)).mode == "I;16"

    decoded = decode_image(png, META)

    # 256 x 256 is already the resize target, so the pixels are only centre-cropped: columns 16..239.
    assert decoded.status == "ok"
    expected = np.broadcast_to(np.arange(16, 240, dtype=np.uint8)[None, :, None], (224, 224, 3))
    assert np.array_equal(decoded.pixels, expected)


def test_an_exif_rotated_jpeg_is_rotated_before_resizing():
    """docs/reliability.md, Bad inputs: "EXIF-rotated JPEG → ok, rotated before resizing": exactly the
    crop of the upright image (as timm would make it from the image a viewer shows), which is neither
    the crop of the image as stored nor that crop turned afterwards (interpolation differs)."""
    stored = corpus.gradient(480, 240, seed=3)  # landscape as stored, portrait once turned
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed turned 90 degrees clockwise
    jpeg = corpus.encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    as_stored = Image.open(io.BytesIO(jpeg)).convert("RGB")
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(jpeg))).convert("RGB")
    assert upright.size == (240, 480)

    decoded = decode_image(jpeg, META)

    assert decoded.status == "ok"
    assert np.array_equal(decoded.pixels, resize_crop(upright, META))
    not_turned = resize_crop(as_stored, META)
    assert np.abs(decoded.pixels.astype(int) - not_turned.astype(int)).mean() > 10
    assert not np.array_equal(decoded.pixels, np.rot90(not_turned, k=-1))


@pytest.mark.subprocess
def test_importing_the_pipeline_leaves_pillows_process_wide_settings_alone():
    """#17 "no import-time global side effects": Pillow's decompression-bomb limit and its
    truncated-image switch are the embedding application's; importing our modules changes neither."""
    probe = (
        "from PIL import Image, ImageFile\n"
        "before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)\n"
        "import pipeline.decode, pipeline.predict, pipeline.stages, pipeline.run, jobs.cli\n"
        "assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before, before\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=Path(__file__).parents[2], timeout=300)
