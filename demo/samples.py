"""Procedural samples with known truth: pictures of shapes and textures, synthesized sounds.

Training (`jobs.train`) and the demo (`jobs.demo`) draw from the same generators, with
different seeds, so the shipped demo models see fresh samples of the classes they learned.
A sample's class is the file name's prefix up to the first "-" (`truth_of`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw

IMAGE_CLASSES = ("circle", "square", "triangle", "ring", "cross", "stripes", "checker", "dots")
AUDIO_CLASSES = ("tone", "chirp_up", "chirp_down", "white_noise", "brown_noise", "clicks", "am_tone", "fm_tone")
IMAGE_SIZE = 96
SAMPLE_RATE = 16_000
# Multiples of the 0.5 s window hop, so every 1 s model window of a demo file is full of signal.
AUDIO_DURATIONS_S = (1.0, 1.5, 2.0)

Color = tuple[int, int, int]


def truth_of(path: str | Path) -> str:
    """The class a sample file was generated as, from its name (`<class>-<n>.<ext>`)."""
    return Path(path).name.split("-", 1)[0]


# ---- pictures ---------------------------------------------------------------------------------


def _colors(rng: random.Random) -> tuple[Color, Color]:
    """A background and a foreground colour that differ clearly in brightness."""
    while True:
        bg = tuple(rng.randrange(256) for _ in range(3))
        fg = tuple(rng.randrange(256) for _ in range(3))
        if abs(sum(bg) - sum(fg)) >= 180:
            return bg, fg  # type: ignore[return-value]


def _rotated(points: list[tuple[float, float]], cx: float, cy: float, angle: float) -> list[tuple[float, float]]:
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in points]


def _draw_object(draw: ImageDraw.ImageDraw, shape: str, rng: random.Random, fg: Color, size: int) -> None:
    r = rng.uniform(0.18, 0.38) * size
    cx, cy = (rng.uniform(r, size - r) for _ in range(2))
    angle = rng.uniform(0, 2 * math.pi)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fg)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fg, width=max(3, int(r * rng.uniform(0.15, 0.3))))
    elif shape == "square":
        draw.polygon(_rotated([(-r, -r), (r, -r), (r, r), (-r, r)], cx, cy, angle), fill=fg)
    elif shape == "triangle":
        corners = [(r * math.cos(k * 2 * math.pi / 3), r * math.sin(k * 2 * math.pi / 3)) for k in range(3)]
        draw.polygon(_rotated(corners, cx, cy, angle), fill=fg)
    else:  # cross: two rotated bars
        w = r * rng.uniform(0.22, 0.35)
        for bar in ([(-r, -w), (r, -w), (r, w), (-r, w)], [(-w, -r), (w, -r), (w, r), (-w, r)]):
            draw.polygon(_rotated(bar, cx, cy, angle), fill=fg)


def _draw_texture(image: Image.Image, texture: str, rng: random.Random, fg: Color) -> Image.Image:
    """Draw the texture on a canvas twice the size, rotate it and cut out the middle."""
    size = image.width
    canvas = Image.new("RGB", (2 * size, 2 * size), image.getpixel((0, 0)))
    draw = ImageDraw.Draw(canvas)
    step = rng.randint(size // 12, size // 5)
    if texture == "stripes":
        for x in range(0, 2 * size, 2 * step):
            draw.rectangle((x, 0, x + step - 1, 2 * size), fill=fg)
    elif texture == "checker":
        for x in range(0, 2 * size, step):
            for y in range(0, 2 * size, step):
                if (x // step + y // step) % 2:
                    draw.rectangle((x, y, x + step - 1, y + step - 1), fill=fg)
    else:  # dots on a grid
        radius = step * rng.uniform(0.2, 0.35)
        for x in range(step // 2, 2 * size, step):
            for y in range(step // 2, 2 * size, step):
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fg)
    rotated = canvas.rotate(rng.uniform(0, 360), resample=Image.Resampling.BILINEAR)
    return rotated.crop((size // 2, size // 2, size // 2 + size, size // 2 + size))


def make_image(shape: str, rng: random.Random, size: int = IMAGE_SIZE) -> Image.Image:
    """One picture of class `shape` with random colours, scale, position, rotation and noise."""
    if shape not in IMAGE_CLASSES:
        raise ValueError(f"unknown picture class {shape!r}; known: {', '.join(IMAGE_CLASSES)}")
    bg, fg = _colors(rng)
    image = Image.new("RGB", (size, size), bg)
    if shape in ("stripes", "checker", "dots"):
        image = _draw_texture(image, shape, rng, fg)
    else:
        _draw_object(ImageDraw.Draw(image), shape, rng, fg, size)
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, rng.uniform(0, 20), (size, size, 3))
    pixels = np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


# ---- sounds -----------------------------------------------------------------------------------


def _tone(t: np.ndarray, rng: random.Random) -> np.ndarray:
    return np.sin(2 * np.pi * rng.uniform(200, 4000) * t + rng.uniform(0, 2 * np.pi))


def _chirp(t: np.ndarray, rng: random.Random, up: bool) -> np.ndarray:
    # Exponential sweep over the whole clip, so any 1 s window sees the pitch move one way.
    low, high = rng.uniform(150, 600), rng.uniform(2500, 6000)
    f0, f1 = (low, high) if up else (high, low)
    duration = t[-1] + 1 / SAMPLE_RATE
    k = math.log(f1 / f0) / duration
    sweep: np.ndarray = np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k)
    return sweep


def _white(t: np.ndarray, nprng: np.random.Generator) -> np.ndarray:
    return nprng.uniform(-1, 1, t.size)


def _brown(t: np.ndarray, nprng: np.random.Generator) -> np.ndarray:
    walk = np.cumsum(nprng.normal(0, 1, t.size))
    walk -= np.convolve(walk, np.ones(401) / 401, mode="same")  # remove the slow drift, keep the rumble
    rumble: np.ndarray = walk / (np.abs(walk).max() + 1e-9)
    return rumble


def _clicks(t: np.ndarray, rng: random.Random) -> np.ndarray:
    signal = np.zeros_like(t)
    period = int(SAMPLE_RATE / rng.uniform(4, 25))
    length = rng.randint(20, 80)
    click = np.hanning(length) * np.sin(2 * np.pi * rng.uniform(1000, 5000) * np.arange(length) / SAMPLE_RATE)
    for start in range(rng.randrange(period), t.size - length, period):
        signal[start : start + length] += click
    return signal


def _am_tone(t: np.ndarray, rng: random.Random) -> np.ndarray:
    envelope = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(3, 15) * t))
    tone: np.ndarray = envelope * _tone(t, rng)
    return tone


def _fm_tone(t: np.ndarray, rng: random.Random) -> np.ndarray:
    carrier, rate, depth = rng.uniform(400, 3000), rng.uniform(3, 12), rng.uniform(0.1, 0.3)
    # Phase of a carrier whose frequency swings by +-depth around `carrier` at `rate` Hz.
    phase = carrier * t - carrier * depth * np.cos(2 * np.pi * rate * t) / (2 * np.pi * rate)
    return np.sin(2 * np.pi * phase)


def make_sound(kind: str, rng: random.Random, duration_s: float = 1.0) -> np.ndarray:
    """A float32 mono clip of class `kind` at `SAMPLE_RATE`, with random gain and a little noise."""
    nprng = np.random.default_rng(rng.getrandbits(32))
    t = np.arange(round(duration_s * SAMPLE_RATE)) / SAMPLE_RATE
    synth: dict[str, Callable[[], np.ndarray]] = {
        "tone": lambda: _tone(t, rng),
        "chirp_up": lambda: _chirp(t, rng, up=True),
        "chirp_down": lambda: _chirp(t, rng, up=False),
        "white_noise": lambda: _white(t, nprng),
        "brown_noise": lambda: _brown(t, nprng),
        "clicks": lambda: _clicks(t, rng),
        "am_tone": lambda: _am_tone(t, rng),
        "fm_tone": lambda: _fm_tone(t, rng),
    }
    if kind not in synth:
        raise ValueError(f"unknown sound class {kind!r}; known: {', '.join(AUDIO_CLASSES)}")
    signal = synth[kind]()
    signal = signal / (np.abs(signal).max() + 1e-9) * rng.uniform(0.1, 0.9)
    signal += nprng.normal(0, rng.uniform(0.001, 0.01), t.size)
    clip: np.ndarray = np.clip(signal, -1, 1).astype(np.float32)
    return clip


# ---- folders of files -------------------------------------------------------------------------


def write_images(folder: Path, count: int, seed: int) -> list[Path]:
    """`count` pictures cycling through the classes, as PNG (lossless, so no JPEG artefacts)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        shape = IMAGE_CLASSES[i % len(IMAGE_CLASSES)]
        path = folder / f"{shape}-{i:04d}.png"
        make_image(shape, rng).save(path)
        paths.append(path)
    return paths


def write_sounds(folder: Path, count: int, seed: int) -> list[Path]:
    """`count` clips of 1 to 2 s cycling through the classes, alternating WAV and FLAC."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        kind = AUDIO_CLASSES[i % len(AUDIO_CLASSES)]
        path = folder / f"{kind}-{i:04d}.{'wav' if i % 2 == 0 else 'flac'}"
        sf.write(path, make_sound(kind, rng, rng.choice(AUDIO_DURATIONS_S)), SAMPLE_RATE, subtype="PCM_16")
        paths.append(path)
    return paths
