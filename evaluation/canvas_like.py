"""Render EMNIST images the way users hand them to the service: big canvases, anywhere, any style.

Used by the tests and evaluations that check that a model's accuracy survives serving: an EMNIST
test image is turned upright, enlarged to a random size at a random spot on a 280x280 canvas (the
web app's size), and painted in one of the styles browsers and cameras produce. Feeding the result
to `emnist.preprocessing.preprocess` should give back (nearly) the original image.
"""

from __future__ import annotations

import io
from typing import Literal, get_args

import numpy as np
from PIL import Image

from emnist import canvas
from emnist.preprocessing import IMAGE_SIZE, emnist_to_upright

Style = Literal["dark_on_light", "light_on_dark", "transparent"]
STYLES: tuple[Style, ...] = get_args(Style)
CANVAS_SIZE = canvas.CANVAS_SIZE
# Side of the enlarged 28x28 frame as a fraction of the canvas: from a small letter in a corner
# to one that fills the canvas.
SCALE_RANGE = (0.3, 1.0)


def render(
    emnist_image: np.ndarray,
    rng: np.random.Generator,
    *,
    size: int = CANVAS_SIZE,
    style: Style | None = None,
    scale_range: tuple[float, float] = SCALE_RANGE,
    crisp: bool = False,
) -> Image.Image:
    """Paint one EMNIST image (uint8 (28, 28), stored orientation) on a `size` x `size` canvas.

    Styles: "dark_on_light" (RGB, black ink on white paper), "light_on_dark" (L, white on black)
    and "transparent" (RGBA like a browser canvas export: RGB all zero, the ink in alpha).
    `style=None` draws one from `rng`; scale and position are always drawn from `rng`.
    `crisp=True` cuts the enlarged glyph at half intensity with an antialiased edge, like a pen
    stroke on a canvas, instead of keeping EMNIST's blur enlarged.
    """
    if emnist_image.shape != (IMAGE_SIZE, IMAGE_SIZE) or emnist_image.dtype != np.uint8:
        raise ValueError(f"expected uint8 (28, 28), got {emnist_image.dtype} {emnist_image.shape}")
    low, high = scale_range
    if not 0 < low <= high <= 1:
        raise ValueError(f"scale_range must satisfy 0 < low <= high <= 1, got {scale_range}")
    if style is None:
        style = STYLES[rng.integers(len(STYLES))]
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose from {STYLES}")
    side = max(IMAGE_SIZE, round(rng.uniform(low, high) * size))
    glyph = Image.fromarray(np.ascontiguousarray(emnist_to_upright(emnist_image)))
    if crisp:
        # Cut at 2x and box-reduce: a one-pixel antialiased edge, as canvases draw strokes.
        glyph = glyph.resize((2 * side, 2 * side), Image.Resampling.BICUBIC)
        glyph = glyph.point(lambda v: 255 if v >= 128 else 0).reduce(2)
    else:
        glyph = glyph.resize((side, side), Image.Resampling.BICUBIC)
    x, y = (int(v) for v in rng.integers(0, size - side, size=2, endpoint=True))
    ink = Image.new("L", (size, size), 0)
    ink.paste(glyph, (x, y))
    if style == "light_on_dark":
        return ink
    if style == "dark_on_light":
        return Image.merge("RGB", [ink.point(lambda v: 255 - v)] * 3)
    black = Image.new("L", (size, size), 0)
    return Image.merge("RGBA", (black, black, black, ink))


def to_png(image: Image.Image) -> bytes:
    """Encode as PNG in memory, as a browser upload would arrive."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
