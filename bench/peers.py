"""Ours vs the peers on the same job: ghostnet-pipeline, Ray Data as its batch-inference guide
teaches, Daft as its docs teach.

    python bench/peers.py
"""

from __future__ import annotations

import os
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# The job's images: photo-like JPEGs, 80% 800x600 and 20% 1920x1080, cut from real photographs.
SIZES = ((800, 600), (1920, 1080))
LARGE_SHARE = 0.2


def make_photos(folder: Path, count: int) -> Path:
    """``count`` photo-like JPEGs in ``folder`` (made once; the same seed gives the same files)."""
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.jpg"))) != count:
        with ProcessPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(_one_photo, [(folder, i) for i in range(count)], chunksize=32))
    return folder


def _one_photo(args: tuple[Path, int]) -> None:
    from tests.corpus import photos

    folder, i = args
    rng = random.Random(i)
    sources = list(photos().values())
    source = sources[i % len(sources)]
    w, h = source.size
    cw, ch = rng.randint(w // 3, w), rng.randint(h // 3, h)
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    size = SIZES[1] if rng.random() < LARGE_SHARE else SIZES[0]
    image = source.crop((left, top, left + cw, top + ch)).resize(size)
    image.save(folder / f"photo-{i:06d}.jpg", quality=rng.randint(85, 95))
