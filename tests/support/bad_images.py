"""Pictures for the bad-input tests: random drawings, odd but valid encodings of them, and
hostile files (headers that lie about their size, decompression bombs). Deterministic: every
builder takes a `random.Random`, so a seed gives the same bytes on every run."""

from __future__ import annotations

import functools
import io
import random
import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw

CANVAS = 280


def drawing(rng: random.Random) -> Image.Image:
    """A canvas-like "L" picture: 1 to 3 dark pen strokes on white, as the web page sends."""
    image = Image.new("L", (CANVAS, CANVAS), 255)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(1, 3)):
        points = [(rng.randint(40, 240), rng.randint(40, 240)) for _ in range(rng.randint(2, 4))]
        draw.line(points, fill=0, width=rng.randint(10, 24))
    return image


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def same_pixels_variant(image: Image.Image, kind: str) -> bytes:
    """`image` ("L", pure black and white) re-encoded so that it decodes to the very same picture:
    preprocessing must give identical pixels, so the prediction must be identical too."""
    if kind == "png16":  # 16-bit grayscale: v * 257 is exactly v / 255 of full scale
        return encode(Image.fromarray(np.asarray(image).astype(np.uint16) * 257))
    if kind == "palette":
        return encode(image.convert("P"))
    if kind == "palette-transparent":  # white is the transparent colour: strokes on nothing
        palette = image.convert("P")
        return encode(palette, transparency=palette.getpixel((0, 0)))  # a corner: paper
    if kind == "bilevel":
        return encode(image.convert("1"))
    if kind == "gray-alpha":
        return encode(image.convert("LA"))
    if kind == "alpha-strokes":  # a canvas export: RGB all zero, the strokes in alpha
        alpha = Image.eval(image, lambda v: 255 - v)
        return encode(Image.merge("RGBA", [Image.new("L", image.size, 0)] * 3 + [alpha]))
    if kind == "bmp":
        return encode(image, "BMP")
    if kind == "gif":
        return encode(image, "GIF")
    if kind == "webp-lossless":
        return encode(image, "WEBP", lossless=True)
    raise ValueError(kind)


SAME_PIXEL_KINDS = (
    "png16",
    "palette",
    "palette-transparent",
    "bilevel",
    "gray-alpha",
    "alpha-strokes",
    "bmp",
    "gif",
    "webp-lossless",
)


def multi_frame(first: Image.Image, rng: random.Random, fmt: str) -> bytes:
    """An animation whose first frame is `first`; the service reads only the first frame."""
    others = [drawing(rng) if rng.random() < 0.5 else Image.new("L", first.size, 255)]
    others += [drawing(rng) for _ in range(rng.randint(0, 2))]
    if fmt == "GIF":
        return encode(first, "GIF", save_all=True, append_images=others, duration=100, loop=0)
    if fmt == "PNG":  # APNG
        return encode(first, "PNG", save_all=True, append_images=others, duration=100)
    if fmt == "TIFF":  # not an accepted format at all
        return encode(first, "TIFF", save_all=True, append_images=others)
    return encode(first, "WEBP", save_all=True, append_images=others, lossless=True)


def odd_shape(rng: random.Random) -> bytes:
    """1x1, one-pixel lines and extreme aspect ratios up to 4096 px: odd but valid."""
    long_side = rng.choice((1, 2, 3, 17, 1000, 4096))
    short_side = rng.choice((1, 1, 2, 5))
    height, width = (short_side, long_side) if rng.random() < 0.5 else (long_side, short_side)
    pixels = np.full((height, width), rng.choice((0, 255)), dtype=np.uint8)
    if rng.random() < 0.7:  # a dark or light dash somewhere along the long side
        start = rng.randrange(max(long_side, 1))
        stop = min(long_side, start + rng.randint(1, max(1, long_side // 3)))
        ink = 255 - int(pixels.flat[0])
        if height >= width:
            pixels[start:stop] = ink
        else:
            pixels[:, start:stop] = ink
    mode = rng.choice(("L", "RGB", "RGBA"))
    return encode(Image.fromarray(pixels).convert(mode))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int, pixel_data: bytes = b"") -> bytes:
    """A PNG whose (valid, CRC-checked) header says width x height, 8-bit gray."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = pixel_data or zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


@functools.cache
def png_bomb(side: int) -> bytes:
    """A real decompression bomb: side x side of zeros, every row present (~side²/1000 bytes,
    side² bytes once decoded: 12000 -> about 140 kB in, 144 MB out). Built in 1 MB slices."""
    compressor = zlib.compressobj(9)
    row = b"\0" * (side + 1)  # filter byte + pixels
    rows_per_slice = max(1, (1 << 20) // len(row))
    parts, done = [], 0
    while done < side:
        count = min(rows_per_slice, side - done)
        parts.append(compressor.compress(row * count))
        done += count
    parts.append(compressor.flush())
    return png_claiming(side, side, b"".join(parts))


def text_chunk_bomb(kind: bytes) -> bytes:
    """A small valid PNG carrying a zTXt or iCCP chunk that inflates to 50 MB."""
    plain = encode(Image.new("L", (8, 8), 255))
    bomb = _chunk(kind, b"k\0\0" + _text_bomb_payload())
    return plain[:33] + bomb + plain[33:]  # right after the 33-byte signature + IHDR


@functools.cache
def _text_bomb_payload() -> bytes:
    return zlib.compress(b"\0" * 50_000_000, 9)


def lying_header(rng: random.Random) -> tuple[str, bytes]:
    """A file of a real format whose header claims a huge size, with hardly any data."""
    side = rng.choice((4097, 5000, 20000, 50000, 65535))
    other = rng.choice((1, 100, side))
    width, height = (side, other) if rng.random() < 0.5 else (other, side)
    fmt = rng.choice(("PNG", "JPEG", "GIF", "BMP"))
    if fmt == "PNG":
        return f"png {width}x{height}", png_claiming(width, height)
    small = Image.new("L", (8, 8), 255)
    if fmt == "JPEG":
        data = bytearray(encode(small, "JPEG"))
        at = data.find(b"\xff\xc0") + 5  # SOF0: precision, then height and width
        data[at : at + 4] = struct.pack(">HH", height, width)
    elif fmt == "GIF":
        data = bytearray(encode(small, "GIF"))
        data[6:10] = struct.pack("<HH", width, height)  # the logical screen
    else:
        data = bytearray(encode(small, "BMP"))
        data[18:26] = struct.pack("<ii", width, height)
    return f"{fmt.lower()} {width}x{height}", bytes(data)


def corrupt(data: bytes, rng: random.Random) -> bytes:
    """A few random bytes overwritten past the format signature."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        at = rng.randrange(8, len(out))
        out[at] = rng.randrange(256)
    return bytes(out)
