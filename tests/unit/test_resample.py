"""emnist/resample.py gives Pillow's own bicubic resize, to the bit: the 28x28 the models were
trained on is defined by Pillow's result, so the faster path may not move a single value."""

import numpy as np
import pytest
from PIL import Image

from emnist.resample import bicubic_weights, resize_placed


def pillow_resize_placed(crop, side, offset, box, out_size):
    canvas = Image.new("F", (side, side))
    canvas.paste(Image.fromarray(crop), offset)
    return np.asarray(canvas.resize((out_size, out_size), Image.Resampling.BICUBIC, box=box))


def placed(rng, height, width, margin):
    """A crop centred on its canvas as preprocessing._frame places it, with the frame's box."""
    crop = rng.random((height, width), dtype=np.float32) * (rng.random((height, width)) < 0.4)
    frame = (max(height, width) + margin) * 28 / 25
    side = int(np.ceil(frame)) + 2
    y0, x0 = (side - height) // 2, (side - width) // 2
    cy, cx = y0 + height / 2, x0 + width / 2
    box = (cx - frame / 2, cy - frame / 2, cx + frame / 2, cy + frame / 2)
    return crop.astype(np.float32), side, (x0, y0), box


@pytest.mark.parametrize(
    "height, width, margin",
    [(1, 1, 0.5), (3, 12, 2.0), (27, 28, 1.0), (156, 109, 9.3), (40, 390, 30.0), (701, 650, 4.0)],
)
def test_the_resize_is_pillows_to_the_bit(height, width, margin):
    rng = np.random.default_rng(height * 1000 + width)
    args = placed(rng, height, width, margin)
    ours = resize_placed(*args, 28)
    assert ours.dtype == np.float32 and ours.shape == (28, 28)
    assert np.array_equal(ours, pillow_resize_placed(*args, 28))


def test_the_resize_is_pillows_on_many_random_placements():
    rng = np.random.default_rng(0)
    for _ in range(300):
        height, width = rng.integers(1, 300, 2)
        args = placed(rng, int(height), int(width), float(rng.random() * 20))
        assert np.array_equal(resize_placed(*args, 28), pillow_resize_placed(*args, 28))


@pytest.mark.parametrize("span", [(0.0, 28.0), (3.25, 190.5), (1.5, 9.0)])
def test_each_row_of_weights_sums_to_one(span):
    weights = bicubic_weights(200, (span[0],), (span[1],), 28)[0]
    assert weights.shape == (28, 200)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-12)
