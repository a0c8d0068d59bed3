"""``ghostnet-pipeline demo``: the embedded default.

Generates a folder of pictures, labels it on a private local Ray and shows where the
Parquet is and how to query it. Needs no network, no cluster and no object store.
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from jobs._errors import guarded
from jobs.label import print_summary
from pipeline.config import RunConfig
from pipeline.run import run

SHAPES = ("circle", "square", "triangle", "stripes", "checker", "ring")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "demo",
        help="label generated samples on a local Ray",
        description="Generate sample pictures, label them on a private local Ray, print the result.",
    )
    parser.add_argument("--output", metavar="DIR", help="where samples and results go (default: a temp dir)")
    parser.add_argument("--count", type=int, default=48, metavar="N", help="samples to generate (default 48)")
    parser.add_argument("--seed", type=int, default=2026, metavar="N", help="sample seed (default 2026)")
    parser.set_defaults(handler=lambda args: guarded(lambda: demo(args)))


def make_image(shape: str, rng: random.Random, size: int = 160) -> Image.Image:
    """One procedurally drawn picture of ``shape`` with random colours, scale and position."""
    bg = tuple(rng.randrange(256) for _ in range(3))
    fg = tuple(255 - c for c in bg)
    image = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(image)
    r = rng.uniform(0.2, 0.4) * size
    cx, cy = (rng.uniform(r, size - r) for _ in range(2))
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fg)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fg, width=max(2, int(r / 4)))
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fg)
    elif shape == "triangle":
        angle = rng.uniform(0, 2 * math.pi)
        points = [(cx + r * math.cos(angle + k * 2 * math.pi / 3), cy + r * math.sin(angle + k * 2 * math.pi / 3))
                  for k in range(3)]
        draw.polygon(points, fill=fg)
    elif shape == "stripes":
        step = rng.randint(8, 20)
        for x in range(0, size, 2 * step):
            draw.rectangle((x, 0, x + step - 1, size), fill=fg)
    else:
        step = rng.randint(10, 24)
        for x in range(0, size, step):
            for y in range(0, size, step):
                if (x // step + y // step) % 2:
                    draw.rectangle((x, y, x + step - 1, y + step - 1), fill=fg)
    return image


def write_samples(folder: Path, count: int, seed: int) -> None:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        shape = SHAPES[i % len(SHAPES)]
        make_image(shape, rng).save(folder / f"{shape}-{i:04d}.jpg", quality=90)


def demo(args: argparse.Namespace) -> int:
    root = Path(args.output or tempfile.mkdtemp(prefix="ghostnet-demo-")).resolve()
    samples, output = root / "samples", root / "output"
    write_samples(samples, args.count, args.seed)
    print(f"wrote {args.count} sample pictures to {samples}")
    result = run(
        RunConfig(inputs=(str(samples),), output=str(output), model="ghostnet_050", weights="random",
                  num_classes=len(SHAPES), reprocess=True)
    )
    print_summary(result)
    print("\nquery it with DuckDB:")
    glob = f"{output}/predictions/**/*.parquet"
    print(f"  duckdb -c \"SELECT status, count(*) FROM read_parquet('{glob}', hive_partitioning=true) GROUP BY 1\"")
    print(f"  duckdb -c \"SELECT uri, label, score FROM read_parquet('{glob}') ORDER BY score DESC LIMIT 5\"")
    return 0
