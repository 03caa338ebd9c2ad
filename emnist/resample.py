"""Pillow's bicubic resize of a float picture, as two small matrix products.

`preprocessing._frame` shrinks the ink's crop, centred on a zero canvas, to 28x28 with
`Image.resize(..., BICUBIC, box=...)` on a mode "F" image. Pillow does it in two passes of
double-precision sums (horizontal into a float32 image, then vertical), each output pixel a
weighted sum of the input pixels under a kernel widened by the shrink factor, the weights
normalised to sum to 1 over the taps inside the picture. On a 200 px canvas that costs about
90 us with the canvas, of which the crop is a quarter; the zero border only pads the sums.

Here the same weights (Pillow's `precompute_coeffs` in Resample.c, the same expressions in the
same precision) are built as a 28 x side matrix per axis, restricted to the crop's columns, and
applied with BLAS in float64, rounding to float32 where Pillow stores: out = Ky @ (crop @ Kx.T).
Only the summation order differs, below float32's resolution; `tests/unit/test_resample.py`
compares the two on real drawings.
"""

from __future__ import annotations

import numpy as np


def bicubic_weights(
    in_size: int, starts: tuple[float, ...], ends: tuple[float, ...], out_size: int
) -> np.ndarray:
    """(len(starts), out_size, in_size) float64 weights of Pillow's bicubic resample of the input
    spans [start, end) onto out_size pixels, one matrix per span (both axes in one pass: numpy's
    per-call cost, not arithmetic, is most of the time here).

    Resample.c's `precompute_coeffs`, expression by expression: the box as C floats, C's int()
    truncation, the reciprocal scale, Keys' cubic with a = -0.5, the per-row normalisation over
    the taps inside the picture.
    """
    start = np.asarray(starts, dtype=np.float32)[:, np.newaxis]
    end = np.asarray(ends, dtype=np.float32)[:, np.newaxis]
    scale = (end - start).astype(np.float64) / out_size  # a float subtraction, as in C
    filterscale = np.maximum(scale, 1.0)
    support = 2.0 * filterscale
    taps = int(np.ceil(support.max())) * 2 + 1
    center = start + (np.arange(out_size) + 0.5) * scale
    first = np.maximum(center - support + 0.5, 0).astype(np.intp)  # (int) truncates
    x = first[..., np.newaxis] + np.arange(taps)
    d = x + (0.5 - center[..., np.newaxis])
    d *= (1.0 / filterscale)[..., np.newaxis]
    np.abs(d, out=d)
    # Taps past the picture's edge carry no weight, nor does the cubic beyond 2: at 2 it is 0.
    np.minimum(d, 2.0, out=d)
    d[x >= in_size] = 2.0
    w = np.where(d < 1.0, (1.5 * d - 2.5) * d * d + 1, (((d - 5) * d + 8) * d - 4) * -0.5)
    total = w.sum(axis=-1, keepdims=True)
    np.divide(w, total, out=w, where=total != 0)  # Resample.c skips an all-zero row
    # Scattered into dense rows, with room for the taps past the edge (sliced off).
    weights = np.zeros((len(starts), out_size, in_size + taps))
    rows = np.arange(len(starts) * out_size).reshape(len(starts), out_size, 1)
    weights.reshape(-1)[(rows * (in_size + taps) + x).reshape(-1)] = w.reshape(-1)
    return weights[..., :in_size]


def resize_placed(
    crop: np.ndarray,
    side: int,
    offset: tuple[int, int],
    box: tuple[float, float, float, float],
    out_size: int,
) -> np.ndarray:
    """What `Image.new("F", (side, side))`, pasting float32 `crop` at `offset` (x, y) and
    `.resize((out_size, out_size), BICUBIC, box=box)` give, as a float32 array."""
    height, width = crop.shape
    x0, y0 = offset
    across, down = bicubic_weights(side, box[:2], box[2:], out_size)
    rows = (crop.astype(np.float64) @ across[:, x0 : x0 + width].T).astype(np.float32)
    return (down[:, y0 : y0 + height] @ rows.astype(np.float64)).astype(np.float32)
