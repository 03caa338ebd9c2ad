"""The one preprocessing: any picture of a character -> the 28x28 uint8 array the models take.

Training, the TorchServe handler and the web app all call this module, so what a model sees in
serving is made the way its training data was. It imports no torch (the web app runs without it).

The target is EMNIST's own conversion of the 128x128 NIST scans (Cohen et al. 2017): Gaussian blur
(sigma 1 at 128 px), crop to the ink's region of interest, centre it in a square frame keeping the
aspect ratio, a border so the long side spans about 24 of 28 px, bicubic downsampling, intensities
stretched to 0..255, white ink on black, stored transposed. Here the crop comes first, the border
and the blur scale with the stroke width (NIST's pen is EMNIST's only physical scale: bold glyphs
sit further inside the frame and are blurrier), and the blur is applied at the output scale, only
as far as the input is not already that soft.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from emnist.png import gray_png
from emnist.resample import resize_placed

# Bump whenever the output for a given input changes: checkpoints record it.
PREPROCESSING_VERSION = "1"
IMAGE_SIZE = 28

# EMNIST's only physical scale is NIST's pen: its blur (sigma 1 px at 128 px) and the margin its
# region of interest leaves around the ink are fixed in scan pixels, so in the 28x28 output both
# grow with the stroke width: the half-maximum outline's long side spans GLYPH_SPAN -
# STROKE_MARGIN * stroke width pixels (bold glyphs sit further inside the frame), and the blur
# that makes a crisp pen stroke look like EMNIST is BLUR_PER_STROKE times the stroke width.
# Tuned on byclass test images (the training pool) by rendering them on canvases, soft and
# crisp, and minimising the error of the round trip; tests/unit/test_preprocessing.py checks it.
GLYPH_SPAN = 25.0
STROKE_MARGIN = 0.85
BLUR_PER_STROKE = 0.2
# The ink outline is taken at half the strongest ink: there a soft (blurred, photographed) stroke
# and a crisp canvas stroke have the same edge, so framing does not depend on softness.
INK_LEVEL = 0.5
# Ink weaker than this (0..1 contrast against the background) means "nothing drawn".
MIN_CONTRAST = 0.1
# Ink no longer than this many stroke widths is a dot (a tap on the canvas), not a character. The
# stroke-width estimate (twice area over perimeter) of a round dot is half its diameter, so a dot
# measures 2; a dash twice as long as the pen is wide, about 3.
DOT_STROKES = 2.5
# Larger pictures are shrunk (box filter, exact) before the float work: the output is 28 px.
_MAX_WORK_SIDE = 1024
# Formats a user can plausibly upload; anything else (EPS runs Ghostscript...) is refused.
_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_SIDE = 4096
# ITU-R 601 luma, as Pillow's convert("L").
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class InvalidImageError(ValueError):
    """The bytes are not an image this service can read; the message says what to do."""


@dataclass(frozen=True)
class Preprocessed:
    """`pixels`: uint8 (28, 28), white ink on black, EMNIST orientation (transposed).

    `empty` is True when nothing was drawn; `pixels` are then all zero. `extent` is the ink's
    longer side over the picture's longer side (how much of a canvas the drawing fills) and
    `dot` says the ink is a blob no longer than about two stroke widths: a tap, not a character.
    Neither changes `pixels`; answers use them (emnist/charsets.py).
    """

    pixels: np.ndarray
    empty: bool
    extent: float = 0.0
    dot: bool = False


def emnist_to_upright(a: np.ndarray) -> np.ndarray:
    """EMNIST stores glyphs transposed; swap the last two axes (a view, batches work)."""
    return np.swapaxes(a, -1, -2)


def upright_to_emnist(a: np.ndarray) -> np.ndarray:
    """Inverse of `emnist_to_upright` (a transposition is its own inverse)."""
    return np.swapaxes(a, -1, -2)


def to_model_input(pixels: np.ndarray) -> np.ndarray:
    """uint8 (..., 28, 28) -> float32 (..., 1, 28, 28) in [0, 1]: the only scaling models see."""
    if pixels.dtype != np.uint8 or pixels.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"expected uint8 (..., {IMAGE_SIZE}, {IMAGE_SIZE}), got {pixels.dtype} {pixels.shape}"
        )
    x = pixels[..., np.newaxis, :, :].astype(np.float32)
    x *= np.float32(1 / 255)
    return x


def preview_png(pixels: np.ndarray, scale: int = 8) -> bytes:
    """PNG of the 28x28 model input shown upright, enlarged with hard pixel edges."""
    if pixels.shape != (IMAGE_SIZE, IMAGE_SIZE) or pixels.dtype != np.uint8 or scale < 1:
        raise ValueError(f"expected uint8 (28, 28) and scale >= 1, got {pixels.shape}, {scale}")
    upright = emnist_to_upright(pixels)
    if scale > 1:
        upright = upright.repeat(scale, axis=0).repeat(scale, axis=1)
    return gray_png(upright)


def open_image(
    data: bytes | bytearray | memoryview,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_side: int = DEFAULT_MAX_SIDE,
) -> Image.Image:
    """Check an uploaded image from its header: size, format and dimensions, without decoding a
    pixel (microseconds). The image is returned unloaded; `decode_image` loads it."""
    size = len(data)
    if size == 0:
        raise InvalidImageError("the image is empty: send a PNG or JPEG file")
    if size > max_bytes:
        raise InvalidImageError(f"the image is {size} bytes; send one under {max_bytes} bytes")
    try:
        # open() reads only the header, so the size check below runs before any pixel is decoded.
        image = Image.open(io.BytesIO(data), formats=_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise InvalidImageError(f"the image is far too large ({err}); send a smaller one") from err
    except Exception as err:
        # Pillow's format probes raise many types on hostile bytes; all mean "not an image".
        raise InvalidImageError(
            f"not a readable image ({type(err).__name__}); send a PNG or JPEG file"
        ) from err
    width, height = image.size
    if width > max_side or height > max_side or width < 1 or height < 1:
        raise InvalidImageError(
            f"the image is {width}x{height} px; send one at most {max_side} px on each side"
        )
    return image


def decode_image(
    data: bytes | bytearray | memoryview,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_side: int = DEFAULT_MAX_SIDE,
) -> Image.Image:
    """Decode an uploaded image in memory, refusing anything too big before decoding pixels.

    Multi-frame images give their first frame; EXIF orientation is applied (phone photos).
    """
    image = open_image(data, max_bytes=max_bytes, max_side=max_side)
    try:
        image.seek(0)
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
    except Exception as err:
        # Truncated or corrupt data surfaces here (OSError, SyntaxError, struct.error, zlib...).
        raise InvalidImageError(
            f"the image data is corrupt or truncated ({type(err).__name__}: {err})"
        ) from err
    return image


def preprocess(image: Image.Image | bytes | bytearray | memoryview | np.ndarray) -> Preprocessed:
    """Turn a picture of one character into EMNIST's 28x28 format.

    Accepts a PIL image (any mode), encoded bytes (see `decode_image`) or an array (H, W) or
    (H, W, 1|2|3|4) of uint8, uint16, bool or floats in [0, 1]; the last channel of 2 or 4 is
    alpha. Ink may be dark on light, light on dark, or opaque strokes on a transparent canvas.
    """
    if isinstance(image, bytes | bytearray | memoryview):
        image = decode_image(image)
    gray8 = _opaque_gray8(image) if isinstance(image, Image.Image) else None
    if gray8 is not None:
        located = _locate_gray8(gray8)
    else:
        if isinstance(image, Image.Image):
            gray, alpha = _image_planes(image)
        else:
            gray, alpha = _array_planes(np.asarray(image))
        ink = _ink_map(gray, alpha)
        located = None if ink is None else _locate(ink)
    if located is None:
        return _empty()
    crop, mask, picture_side = located
    framed = _frame(crop, mask)
    if framed is None:
        return _empty()
    pixels, stroke = framed
    ink_side = max(crop.shape)
    return Preprocessed(
        upright_to_emnist(pixels),
        empty=False,
        extent=float(ink_side / picture_side),
        dot=bool(ink_side <= DOT_STROKES * stroke),
    )


def _empty() -> Preprocessed:
    return Preprocessed(np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8), empty=True)


def _upright(image: Image.Image) -> Image.Image:
    """The picture as its EXIF orientation says it is seen (phone photos)."""
    if image.getexif().get(ImageOps.ExifTags.Base.Orientation, 1) != 1:
        return ImageOps.exif_transpose(image)
    return image


def _shrink_factor(size: tuple[int, int]) -> int:
    """The integer box reduction that brings the longer side to at most _MAX_WORK_SIDE."""
    return -(-max(size) // _MAX_WORK_SIDE)


def _opaque_gray8(image: Image.Image) -> np.ndarray | None:
    """The 8-bit gray plane of an opaque L, RGB or RGBA picture (a canvas export), else None.

    These are most requests; `_locate_gray8` handles them in uint8 with a 256-entry table and
    gives the same result as the float path (tests/unit/test_preprocessing.py checks it).
    """
    if image.mode not in ("L", "RGB", "RGBA") or image.info.get("transparency") is not None:
        return None
    if image.mode == "RGBA" and image.getchannel("A").getextrema() != (255, 255):
        return None
    image = _upright(image)
    gray = image if image.mode == "L" else image.convert("L")
    factor = _shrink_factor(gray.size)
    if factor > 1:
        gray = gray.reduce(factor)
    return np.asarray(gray)


def _locate_gray8(gray8: np.ndarray) -> tuple[np.ndarray, np.ndarray, int] | None:
    """`_locate(_ink_map(gray8 / 255))` without float work on the whole picture.

    Ink is a monotonic function of the gray level, so it is evaluated once per level (the same
    float32 operations as `_ink_map`, hence the same values) and the half-peak mask is a single
    comparison of gray levels; only the crop is turned into floats.
    """
    border8 = np.concatenate((gray8[0], gray8[-1], gray8[1:-1, 0], gray8[1:-1, -1]))
    levels = np.arange(256, dtype=np.float32) * np.float32(1 / 255)
    low, high = int(gray8.min()), int(gray8.max())
    ink_of_level = _ink_map(levels, None, border=levels[border8], extremes=(low, high))
    if ink_of_level is None:
        return None
    present = ink_of_level[low : high + 1]
    peak = present.max()
    inked = np.flatnonzero(present >= INK_LEVEL * peak) + low
    # Inked levels are contiguous: the darkest ones (dark ink) or the lightest. Rows and columns
    # holding ink are found from their extreme levels, without a full-size mask.
    dark = inked[0] == low
    limit = int(inked[-1] if dark else inked[0])  # a Python int: uint8 comparisons stay uint8

    def is_ink(levels: np.ndarray) -> np.ndarray:
        return levels <= limit if dark else levels >= limit

    # The first inked pixel in reading order gives the top row, and in the picture upside down
    # the bottom row: argmax stops at the first True (numpy's per-row reductions cost more).
    height, width = gray8.shape
    top = int(is_ink(gray8).argmax()) // width
    bottom = height - int(is_ink(gray8[::-1]).argmax()) // width
    band = gray8[top:bottom]
    cols = np.flatnonzero(is_ink(band.min(axis=0) if dark else band.max(axis=0)))
    left, right = cols[0], cols[-1] + 1
    crop = ink_of_level.take(band[:, left:right])  # take: half the time of ink_of_level[...]
    mask = is_ink(band[:, left:right])
    return crop, mask, max(gray8.shape)


def _image_planes(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Gray and alpha planes of a PIL image as float32 in [0, 1] (alpha None when opaque)."""
    image = _upright(image)
    factor = _shrink_factor(image.size)
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        if factor > 1:
            # Shrunk like 8-bit images (a 4096 px 16-bit PNG peaked at 163 MB, now 100 MB);
            # Pillow reduces "I" and "F" but not the 16-bit modes, so those are widened first.
            image = (image if image.mode == "F" else image.convert("I")).reduce(factor)
        return _array_planes(np.asarray(image))
    if image.has_transparency_data:
        image = image.convert("RGBA")
        alpha = image.getchannel("A")
        image = image.convert("L")
    else:
        alpha = None
        image = image.convert("L")
    if factor > 1:
        image = image.reduce(factor)
        alpha = None if alpha is None else alpha.reduce(factor)
    gray = np.asarray(image, dtype=np.float32) * np.float32(1 / 255)
    if alpha is None:
        return gray, None
    return gray, np.asarray(alpha, dtype=np.float32) * np.float32(1 / 255)


def _array_planes(a: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Gray and alpha planes of an array image as float32 in [0, 1]."""
    if a.ndim == 3 and a.shape[2] in (1, 2, 3, 4):
        channels = a.shape[2]
    elif a.ndim == 2:
        channels, a = 1, a[..., np.newaxis]
    else:
        raise ValueError(f"expected an (H, W) or (H, W, 1-4) image array, got shape {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"the image array is empty: shape {a.shape}")
    planes = _to_unit_float(a)
    color = planes[..., : 3 if channels >= 3 else 1]
    gray = color @ _LUMA if channels >= 3 else color[..., 0]
    alpha = planes[..., -1] if channels in (2, 4) else None
    return np.ascontiguousarray(gray), alpha


def _to_unit_float(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if a.dtype.kind in "ui":
        # 8-bit data is 0..255; wider integers (16-bit PNG, Pillow's "I") are 0..65535.
        top = 255 if a.dtype.itemsize == 1 or a.max(initial=0) <= 255 else 65535
        return np.clip(a, 0, top).astype(np.float32) * np.float32(1 / top)
    if a.dtype.kind == "f":
        return np.nan_to_num(np.clip(a, 0, 1), nan=0.0).astype(np.float32, copy=False)
    raise ValueError(f"unsupported image array dtype {a.dtype}")


def _ink_map(
    gray: np.ndarray,
    alpha: np.ndarray | None,
    *,
    border: np.ndarray | None = None,
    extremes: tuple[int, int] | None = None,
) -> np.ndarray | None:
    """Ink strength >= 0 per pixel, background 0; None when nothing visible was drawn.

    `border` and `extremes` (indices of the darkest and lightest entries of `gray`) let
    `_locate_gray8` pass a table of gray levels as `gray` with the picture's own statistics.
    """
    if alpha is not None and alpha.min() < 1:
        # Strokes on a transparent canvas: lay them on a backdrop that contrasts with their
        # colour (a canvas export is often RGB all zero with the strokes in alpha).
        coverage = float(alpha.sum())
        if coverage == 0:
            return None
        backdrop = 1.0 if float((gray * alpha).sum()) / coverage < 0.5 else 0.0
        gray = gray * alpha + backdrop * (1 - alpha)
    if border is None:
        border = np.concatenate((gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]))
    background = _median(border)
    darkest, lightest = (gray.min(), gray.max()) if extremes is None else gray[list(extremes)]
    # Polarity: ink is whichever direction departs furthest from the background.
    dark_ink = background - darkest >= lightest - background
    ink = background - gray if dark_ink else gray - background
    # Subtract the border's noise level (zero for a clean canvas, grain for a photo).
    noise = 3 * 1.4826 * float(_median(np.abs(border - background)))
    ink -= np.float32(noise)
    np.maximum(ink, 0, out=ink)
    if float(ink.max() if extremes is None else ink[list(extremes)].max()) < MIN_CONTRAST:
        return None
    return ink


def _median(values: np.ndarray) -> np.floating:
    """np.median of a 1-D float array, the same value, without its generic machinery (a third
    of its time on a canvas border; preprocessing takes two per picture)."""
    if values.min() == values.max():  # a clean canvas's border: one value, no partition
        return values[0]
    middle = values.size // 2
    if values.size % 2:
        return np.partition(values, middle)[middle]
    below, above = np.partition(values, (middle - 1, middle))[middle - 1 : middle + 1]
    return (below + above) / values.dtype.type(2)


def _bounds(mask: np.ndarray) -> tuple[int, int, int, int]:
    """top, bottom, left, right (exclusive) of the True pixels of a non-empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def _locate(ink: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The ink's crop, its half-peak mask (the outline framing uses) and the picture's side."""
    mask = ink >= INK_LEVEL * ink.max()
    top, bottom, left, right = _bounds(mask)
    return ink[top:bottom, left:right], mask[top:bottom, left:right], max(ink.shape)


def _frame(crop: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Centre the ink's crop in EMNIST's square frame, resample and blur to 28x28 uint8;
    returns (pixels, the stroke width in input pixels)."""
    height, width = crop.shape
    stroke, edge = _stroke_and_edge_widths(crop, mask)
    frame = (max(height, width) + STROKE_MARGIN * stroke) * IMAGE_SIZE / GLYPH_SPAN
    # The crop centred on a zero canvas with room for the frame around its centre (the resize's
    # box may not leave the canvas), shrunk by Pillow's bicubic resize, which widens its kernel
    # when shrinking: antialiased, like EMNIST's. `resize_placed` gives Pillow's exact values
    # without building the canvas (emnist/resample.py).
    side = int(np.ceil(frame)) + 2
    y0, x0 = (side - height) // 2, (side - width) // 2
    cy, cx = y0 + height / 2, x0 + width / 2
    box = (cx - frame / 2, cy - frame / 2, cx + frame / 2, cy + frame / 2)
    small = resize_placed(crop, side, (x0, y0), box, IMAGE_SIZE)
    # Blur only up to EMNIST's softness: a photographed or upscaled glyph already has some.
    # A Gaussian edge rises from 25% to 75% over 1.35 sigma.
    scale = IMAGE_SIZE / frame
    target, present = BLUR_PER_STROKE * stroke * scale, edge * scale / 1.35
    blur = _blur_matrix(float(np.sqrt(max(target**2 - present**2, 0.0))))
    out = blur @ small @ blur.T
    np.maximum(out, 0, out=out)  # bicubic overshoot
    peak = float(out.max())
    if not peak > 0:
        return None
    out *= np.float32(255 / peak)
    return np.rint(out).astype(np.uint8), stroke


def _stroke_and_edge_widths(crop: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Mean stroke width (twice area over perimeter) and edge width (25%-75% rise) in pixels.

    The perimeter is counted as pixel edges between ink and background (outside the crop is
    background), which overstates slanted edges; pi/4 turns it into the mean Euclidean length.
    """
    edges = (
        np.count_nonzero(mask[1:] != mask[:-1])
        + np.count_nonzero(mask[:, 1:] != mask[:, :-1])
        + np.count_nonzero(mask[[0, -1]])
        + np.count_nonzero(mask[:, [0, -1]])
    )
    perimeter = edges * np.pi / 4
    peak = crop.max()
    # The middle of the rise only: a photo's grain puts stray pixels near 0% and 100%.
    ramp = np.count_nonzero((crop > 0.25 * peak) & (crop < 0.75 * peak))
    return 2 * np.count_nonzero(mask) / perimeter, ramp / perimeter


def _blur_matrix(sigma: float) -> np.ndarray:
    """Gaussian blur along one axis as a 28x28 matrix; ink beyond the frame is zero."""
    if sigma <= 0:
        return np.eye(IMAGE_SIZE, dtype=np.float32)
    offsets = np.arange(IMAGE_SIZE, dtype=np.float32)
    weights = np.exp(-0.5 * ((offsets[:, np.newaxis] - offsets) / sigma) ** 2)
    total = np.exp(-0.5 * (np.arange(-IMAGE_SIZE, IMAGE_SIZE + 1) / sigma) ** 2).sum()
    return (weights / total).astype(np.float32)
