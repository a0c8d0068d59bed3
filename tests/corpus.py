"""Test inputs made on the spot: real photos, every image flavour Pillow opens, and broken files.

Each entry maps an object name to (bytes, expected status). Names deliberately include
spaces, unicode, ``#``, ``%``, ``?`` and leading dots.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

OK, DECODE_ERROR, EMPTY, TOO_LARGE = "ok", "decode_error", "empty", "too_large"


def photos() -> dict[str, Image.Image]:
    """Real photographs shipped inside installed packages (matplotlib, scikit-learn)."""
    import matplotlib
    import sklearn.datasets

    found = {"grace_hopper": Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"}
    images = Path(sklearn.datasets.__file__).parent / "images"
    found.update({p.stem: p for p in sorted(images.glob("*.jpg"))})
    return {name: Image.open(path).convert("RGB") for name, path in found.items()}


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def gradient(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1), (x + y) % 256], axis=-1)
    noise = rng.integers(0, 40, size=base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def png_bomb(side: int = 30_000) -> bytes:
    """A tiny PNG whose header claims side x side pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    row = b"\x00" + b"\x00" * (side * 3)
    body = zlib.compress(row * 4, 9)  # far fewer rows than claimed: it is refused before decoding
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def lossless_jpeg(pixels: np.ndarray) -> bytes:
    """A lossless (SOF3) greyscale JPEG, as DICOM tools and some scanners write: predictor 1,
    one Huffman table giving every difference category a 5-bit code. Pillow decodes it exactly;
    libjpeg-turbo refuses to convert it to RGB, which is what the device decoder asks for."""
    def segment(marker: int, body: bytes) -> bytes:
        return struct.pack(">HH", marker, len(body) + 2) + body

    height, width = pixels.shape
    rows = pixels.astype(int).tolist()
    bits = []
    for y, row in enumerate(rows):
        for x, value in enumerate(row):
            predicted = row[x - 1] if x else rows[y - 1][0] if y else 128
            diff = value - predicted
            size = abs(diff).bit_length()
            bits.append(format(size, "05b"))
            if size:
                bits.append(format(diff if diff > 0 else diff - 1 + (1 << size), f"0{size}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    scan = bytes(int(stream[i : i + 8], 2) for i in range(0, len(stream), 8)).replace(b"\xff", b"\xff\x00")
    huffman = bytes([0x00, 0, 0, 0, 0, 17, *[0] * 11, *range(17)])
    frame = struct.pack(">BHHB", 8, height, width, 1) + bytes([1, 0x11, 0])
    return (b"\xff\xd8" + segment(0xFFC4, huffman) + segment(0xFFC3, frame)
            + segment(0xFFDA, bytes([1, 1, 0x00, 1, 0, 0])) + scan + b"\xff\xd9")


def exif_rotated() -> bytes:
    image = gradient(64, 32, seed=3)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    return encode(image, "JPEG", exif=exif.tobytes())


def mixed_images() -> dict[str, tuple[bytes, str]]:
    """Good images of every flavour and broken ones, with the status each must get."""
    rgb = gradient(96, 80, seed=1)
    jpeg = encode(rgb, "JPEG", quality=90)
    cmyk = encode(rgb.convert("CMYK"), "JPEG")
    animated = io.BytesIO()
    rgb.save(animated, "GIF", save_all=True, append_images=[gradient(96, 80, seed=2)], duration=100)
    grey16 = Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20)
    return {
        "plain photo.jpg": (jpeg, OK),
        "unicodé 照片.png": (encode(rgb, "PNG"), OK),
        "hash#tag.jpg": (jpeg, OK),
        "percent%20name.jpg": (jpeg, OK),
        "question?mark.jpg": (jpeg, OK),
        ".leading-dot.jpg": (jpeg, OK),
        "cmyk.jpg": (cmyk, OK),
        "alpha.png": (encode(rgb.convert("RGBA"), "PNG"), OK),
        "palette.png": (encode(rgb.convert("P"), "PNG"), OK),
        "grey16.png": (encode(grey16, "PNG"), OK),
        "animated.gif": (animated.getvalue(), OK),
        "bitmap.bmp": (encode(rgb, "BMP"), OK),
        "scan.tiff": (encode(rgb, "TIFF"), OK),
        "modern.webp": (encode(rgb, "WEBP"), OK),
        "png named as.jpg": (encode(rgb, "PNG"), OK),
        "tiny 1x1.png": (encode(gradient(1, 1), "PNG"), OK),
        "panorama.jpg": (encode(gradient(2000, 20), "JPEG"), OK),
        "rotated.jpg": (exif_rotated(), OK),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], DECODE_ERROR),
        "header only.png": (encode(rgb, "PNG")[:33], DECODE_ERROR),
        "random bytes.jpg": (np.random.default_rng(7).bytes(2048), DECODE_ERROR),
        "text.png": (b"this is not an image\n" * 10, DECODE_ERROR),
        "empty.jpg": (b"", EMPTY),
        "bomb.png": (png_bomb(), TOO_LARGE),
    }
