"""One huge input does not exhaust a worker's memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests import corpus

pytestmark = pytest.mark.subprocess

# The peak is the process's own (VmHWM, reset just before decoding), not ru_maxrss: Linux carries
# ru_maxrss over from the parent at fork and exec, so under a big pytest process it hid real growth.
MEASURE = """
import sys
from ghostnet import create_model
from pipeline.decode import decode_image

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

meta = create_model("ghostnet_050").meta
data = open(sys.argv[1], "rb").read()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak starts again from what is resident now
before = status("VmRSS")
decoded = decode_image(data, meta)
after = status("VmHWM")
print(decoded.status.value, (after - before) // 1024, decoded.error)
"""


def peak_growth_mib(path: Path) -> tuple[str, int, str]:
    done = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True,
                          timeout=600, cwd=Path(__file__).parents[2], check=True)
    status, growth, error = done.stdout.strip().split(" ", 2)
    return status, int(growth), error


def test_a_400_megapixel_jpeg_is_labeled_in_bounded_memory(tmp_path):
    path = tmp_path / "huge.jpg"
    Image.new("L", (20_000, 20_000), 96).save(path, quality=70)  # 400 MP, 400 MB if decoded whole

    status, growth, _ = peak_growth_mib(path)

    assert status == "ok"
    assert growth < 100, f"decoding grew the worker by {growth} MiB (draft mode decodes at 1/8 scale)"


def test_a_400_megapixel_png_is_refused_before_allocation(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(corpus.png_bomb(side=20_000))

    status, growth, error = peak_growth_mib(path)

    assert status == "too_large" and "megapixels" in error
    assert growth < 50


@pytest.mark.parametrize("size", [(30_000, 8), (20_000, 20), (8, 30_000)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_a_long_thin_png_is_labeled_in_bounded_memory(tmp_path, size):
    """docs/reliability.md, Bad inputs: "a long thin image: ok, worker grows < 50 MiB". A 30000x8
    strip passes --max-pixels (240 kilopixels), but resizing its short side to the model's 256 px
    would make a 960000 x 256 image (700 MiB) on the way to a 224 x 224 crop; only the crop is made."""
    path = tmp_path / "strip.png"
    corpus.gradient(*size).save(path)

    status, growth, _ = peak_growth_mib(path)

    assert status == "ok"
    assert growth < 50, f"decoding a {size[0]}x{size[1]} PNG grew the worker by {growth} MiB"
