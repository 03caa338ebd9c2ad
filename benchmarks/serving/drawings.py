"""Distinct canvas-like drawings for the load generator: one character per client.

Each client sends its own drawing, so an answer meant for another client's drawing (a mix-up)
is observable. The pictures are what the web page posts: dark strokes on a white 280x280
canvas as an 8-bit gray PNG in the page's own encoding (webapp/static/app.js `grayPng`: every
row unfiltered, one zlib stream at the default level, as `emnist.png.gray_png` writes it).
`encoder="pillow"` saves the same picture with Pillow instead (adaptive row filters, what other
clients may send: twice as slow to decode); `rgba=True` gives the canvas's own RGBA export,
which browsers without CompressionStream send and which takes 6 times as long to decode.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from emnist.png import gray_png

CHARACTERS = "0123456789ABCDEFGHJKLMNPQRTUXY"
CANVAS = 280


def drawing_png(
    character: str, *, size: int = 200, rgba: bool = False, encoder: str = "page"
) -> bytes:
    """PNG bytes of `character` written in black on a white canvas."""
    if encoder not in ("page", "pillow"):
        raise ValueError(f"encoder is 'page' or 'pillow', got {encoder!r}")
    image = Image.new("RGBA" if rgba else "L", (CANVAS, CANVAS), "white")
    font = ImageFont.load_default(size=size)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), character, font=font)
    origin = ((CANVAS - (right - left)) / 2 - left, (CANVAS - (bottom - top)) / 2 - top)
    draw.text(origin, character, fill="black", font=font, stroke_width=6, stroke_fill="black")
    if encoder == "page" and not rgba:
        return gray_png(np.asarray(image))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def drawings(count: int, *, rgba: bool = False, encoder: str = "page") -> list[tuple[str, bytes]]:
    """`count` (character, PNG) pairs, all different characters."""
    if not 1 <= count <= len(CHARACTERS):
        raise ValueError(f"between 1 and {len(CHARACTERS)} drawings, got {count}")
    return [(c, drawing_png(c, rgba=rgba, encoder=encoder)) for c in CHARACTERS[:count]]
