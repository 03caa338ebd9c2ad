"""A minimal PNG encoder for small 8-bit gray pictures (the 28x28 previews).

Pillow's `Image.save(format="PNG")` spends about 150 us of Python on a 28x28 picture (its plugin
machinery, chunk and info handling); the bytes themselves are a signature, a header, one zlib
stream of the rows and an end marker, which this writes in about 15 us (zlib's default level, as
Pillow's). The web app makes one preview per prediction. Any PNG decoder reads the
result (`tests/unit/test_preprocessing.py` checks it against Pillow).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def gray_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of a 2-D uint8 array (row 0 at the top), 8-bit grayscale, no filtering."""
    if pixels.ndim != 2 or pixels.dtype != np.uint8 or 0 in pixels.shape:
        raise ValueError(f"expected a non-empty 2-D uint8 array, got {pixels.dtype} {pixels.shape}")
    height, width = pixels.shape
    rows = np.zeros((height, width + 1), dtype=np.uint8)  # each row starts with filter type 0
    rows[:, 1:] = pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit gray, no interlace
    return (
        SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes()))
        + _chunk(b"IEND", b"")
    )
