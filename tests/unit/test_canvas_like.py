"""Canvas-like renderings of EMNIST images: seeded, upright, inside the canvas, in every style."""

import io

import numpy as np
import pytest
from PIL import Image

from emnist.preprocessing import emnist_to_upright
from evaluation.canvas_like import STYLES, render, to_png


def glyph() -> np.ndarray:
    """A stored (transposed) EMNIST-like image: an upright bar at the left, made by hand."""
    upright = np.zeros((28, 28), dtype=np.uint8)
    upright[4:24, 6:10] = 255
    return np.ascontiguousarray(emnist_to_upright(upright))


def ink_of(image: Image.Image) -> np.ndarray:
    """White-on-black ink of any style."""
    if image.mode == "RGBA":
        return np.asarray(image.getchannel("A"))
    if image.mode == "RGB":
        return 255 - np.asarray(image.convert("L"))
    return np.asarray(image)


@pytest.mark.parametrize("style", STYLES)
def test_styles_paint_the_same_upright_glyph_on_a_canvas(style):
    image = render(glyph(), np.random.default_rng(3), style=style, size=280)
    assert image.size == (280, 280)
    assert (
        image.mode == {"dark_on_light": "RGB", "light_on_dark": "L", "transparent": "RGBA"}[style]
    )
    ink = ink_of(image)
    reference = ink_of(render(glyph(), np.random.default_rng(3), style="light_on_dark"))
    assert np.array_equal(ink, reference), "style changes the paint, not the drawing"
    rows, cols = np.flatnonzero(ink.max(axis=1) > 127), np.flatnonzero(ink.max(axis=0) > 127)
    assert rows[-1] - rows[0] > 3 * (cols[-1] - cols[0]), "the bar stands upright"
    if style == "transparent":
        assert not np.asarray(image)[..., :3].any(), "a canvas export: RGB zero, ink in alpha"


def test_renderings_are_seeded_and_vary_in_scale_and_place():
    first = [to_png(render(glyph(), np.random.default_rng(7))) for _ in range(2)]
    assert first[0] == first[1]
    rng = np.random.default_rng(0)
    boxes = {Image.fromarray(ink_of(render(glyph(), rng))).getbbox() for _ in range(10)}
    assert len(boxes) == 10


def test_scale_range_and_crisp_edges():
    image = render(glyph(), np.random.default_rng(0), style="light_on_dark", scale_range=(1, 1))
    top, bottom = np.flatnonzero(np.asarray(image).max(axis=1) > 127)[[0, -1]]
    assert 180 < bottom - top < 220, "a full-canvas frame: the 20 px bar spans 20/28 of 280"
    crisp = np.asarray(render(glyph(), np.random.default_rng(0), style="light_on_dark", crisp=True))
    edge = np.count_nonzero((crisp > 0) & (crisp < 255))
    assert 0 < edge < 0.05 * np.count_nonzero(crisp), "antialiased one-pixel edge only"


def test_png_encoding_round_trips():
    image = render(glyph(), np.random.default_rng(1), style="transparent")
    decoded = Image.open(io.BytesIO(to_png(image)))
    assert decoded.mode == "RGBA" and np.array_equal(np.asarray(decoded), np.asarray(image))


@pytest.mark.parametrize(
    ("image", "options"),
    [
        (np.zeros((28, 27), np.uint8), {}),
        (np.zeros((28, 28), np.float32), {}),
        (np.zeros((28, 28), np.uint8), {"scale_range": (0.0, 0.5)}),
        (np.zeros((28, 28), np.uint8), {"style": "sepia"}),
    ],
)
def test_bad_arguments_are_refused(image, options):
    with pytest.raises(ValueError):
        render(image, np.random.default_rng(0), **options)
