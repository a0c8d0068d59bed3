"""One huge input does not exhaust a worker's memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests import corpus

MEASURE = """
import resource, sys
from ghostnet import create_model
from pipeline.decode import decode_image
meta = create_model("ghostnet_050").meta
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
decoded = decode_image(data, meta)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
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
