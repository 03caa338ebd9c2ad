"""Characters drawn the way the web app's canvas draws them, from pen paths that are not EMNIST.

The canvas (emnist/canvas.py, webapp/static/app.js) exports a 280x280 opaque PNG: black
round-capped, round-joined strokes of width 280 * BRUSH_RATIO on white. Here the pen paths come
from the Hershey vector fonts (centre lines, as a pen moves: simplex, duplex, triplex, script),
and each character is drawn at a random size, position, slant, rotation and width-to-height
ratio, with a slow hand wobble added to the path, by a round brush of the app's width (or any
other). Evaluations
(benchmarks/canvas_realism.py, tests/unit/test_canvas_realism.py) send these drawings through the
serving preprocessing to check that the models read drawings they were never trained on.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageDraw

from emnist import canvas
from emnist.labels import CHARACTERS, label_of

CANVAS_SIZE = canvas.CANVAS_SIZE
# Hershey styles a person might write like: sans simplex (one line), duplex (two), triplex roman
# and italic (serifs), script simplex and complex, cursive. Gothic and symbol sets are left out.
PRINT_FONTS = ("futural", "futuram", "timesr", "timesi")
SCRIPT_FONTS = ("scripts", "scriptc", "cursive")
FONTS = PRINT_FONTS + SCRIPT_FONTS
SUPERSAMPLE = 4  # drawn at 4x and box-reduced: an antialiased edge like the browser's
# How far a hand departs from the font: shear (tangent), rotation, width-to-height ratio, the
# glyph's longer side as a fraction of the canvas, wobble amplitude as a fraction of the glyph.
SLANT = 0.3
ROTATION_DEG = 10.0
SQUEEZE = 1.25
SIZE_RANGE = (0.35, 0.9)
WOBBLE = 0.02


def fonts_for(char: str, fonts: tuple[str, ...] = FONTS) -> tuple[str, ...]:
    """The fonts to draw `char` in: script capitals are calligraphic flourishes nobody draws on a
    phone, so capitals come from the print styles only."""
    chosen = tuple(f for f in fonts if not (char.isupper() and f in SCRIPT_FONTS))
    return chosen or fonts


def app_brush_px(canvas_size: int = CANVAS_SIZE) -> float:
    """The web page's pen width on the exported canvas (emnist/canvas.py, which the page reads)."""
    return canvas.brush_px(canvas_size)


@dataclass(frozen=True)
class Drawing:
    char: str
    label: str
    font: str
    png: bytes


@cache
def _font_paths(font: str) -> dict[str, list[np.ndarray]]:
    """Every character's strokes in font units (y down), one float array (n, 2) per stroke."""
    from HersheyFonts import HersheyFonts  # a test/benchmark dependency: import only when drawing

    hershey = HersheyFonts()
    hershey.load_default_font(font)
    paths = {}
    for char in CHARACTERS:
        strokes = [np.array(s, dtype=np.float64) for s in hershey.strokes_for_text(char)]
        if not strokes:
            raise ValueError(f"Hershey font {font!r} has no glyph for {char!r}")
        paths[char] = strokes
    return paths


def _densify(stroke: np.ndarray, step: float) -> np.ndarray:
    """Points every `step` units along a polyline, so a wobble bends segments, not just corners."""
    seg = np.hypot(*np.diff(stroke, axis=0).T)
    along = np.concatenate(([0.0], np.cumsum(seg)))
    if along[-1] == 0:
        return stroke[:1]
    t = np.linspace(0, along[-1], max(2, int(np.ceil(along[-1] / step)) + 1))
    return np.stack([np.interp(t, along, stroke[:, 0]), np.interp(t, along, stroke[:, 1])], 1)


def place_strokes(
    strokes: list[np.ndarray], rng: np.random.Generator, *, brush: float, size: int = CANVAS_SIZE
) -> list[np.ndarray]:
    """Strokes in canvas pixels: slanted, rotated, squeezed, wobbled, scaled and placed at random.

    The glyph's longer side takes 35-90% of the canvas (as people fill a drawing box), and the
    whole glyph, brush included, stays on the canvas.
    """
    unit = max(np.ptp(np.concatenate(strokes), axis=0).max(), 1.0)
    dense = [_densify(s, unit / 40) for s in strokes]
    slant, angle = rng.uniform(-SLANT, SLANT), np.deg2rad(rng.uniform(-ROTATION_DEG, ROTATION_DEG))
    squeeze = np.exp(rng.uniform(-np.log(SQUEEZE), np.log(SQUEEZE)))
    cos, sin = np.cos(angle), np.sin(angle)
    # x' = squeeze * (x - slant * y), then a rotation; y grows downwards, as on the canvas.
    matrix = np.array([[cos, -sin], [sin, cos]]) @ np.array([[squeeze, -squeeze * slant], [0, 1]])
    # A hand wobble: a slow displacement field of about 2% of the glyph, smooth along the path.
    freq = rng.uniform(0.5, 1.5, size=(2, 2)) * 2 * np.pi / unit
    phase = rng.uniform(0, 2 * np.pi, size=2)
    amp = WOBBLE * unit

    def wobble(p: np.ndarray) -> np.ndarray:
        return p + amp * np.stack([np.sin(p @ freq[i] + phase[i]) for i in range(2)], 1)

    moved = [wobble(s) @ matrix.T for s in dense]
    low, high = np.concatenate(moved).min(0), np.concatenate(moved).max(0)
    room = size - brush - 2
    scale = rng.uniform(*SIZE_RANGE) * size / max((high - low).max(), 1e-6)
    scale = min(scale, room / max((high - low).max(), 1e-6))
    extent = (high - low) * scale
    corner = np.array([rng.uniform(0, max(room - e, 0)) for e in extent]) + brush / 2 + 1
    return [(s - low) * scale + corner for s in moved]


def paint(strokes: list[np.ndarray], *, brush: float, size: int = CANVAS_SIZE) -> Image.Image:
    """Black round-brush strokes on white, as app.js paints them (lineCap/lineJoin "round")."""
    big = size * SUPERSAMPLE
    image = Image.new("L", (big, big), 255)
    draw = ImageDraw.Draw(image)
    width = max(1, round(brush * SUPERSAMPLE))
    radius = brush * SUPERSAMPLE / 2
    for stroke in strokes:
        points = [tuple(p) for p in stroke * SUPERSAMPLE]
        if len(points) > 1:
            draw.line(points, fill=0, width=width, joint="curve")
        # Round caps (and a dot for a one-point stroke): a disc of the brush at each end.
        for x, y in (points[0], points[-1]):
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=0)
    return image.reduce(SUPERSAMPLE).convert("RGB")


def draw_character(
    char: str,
    font: str,
    rng: np.random.Generator,
    *,
    brush: float,
    size: int = CANVAS_SIZE,
) -> Image.Image:
    """One character of a Hershey font, drawn as a canvas drawing (RGB, 280x280 by default)."""
    strokes = place_strokes(_font_paths(font)[char], rng, brush=brush, size=size)
    return paint(strokes, brush=brush, size=size)


def drawing_set(
    per_character: int,
    *,
    seed: int = 0,
    brush: float | None = None,
    fonts: tuple[str, ...] = FONTS,
    characters: str = CHARACTERS,
) -> list[Drawing]:
    """`per_character` drawings of each character, fonts taken in turn, as PNG bytes.

    Drawing k of a character depends on (seed, character, k) alone, so the same seed gives the
    same pen paths whatever the brush or the other characters, and widths can be compared.
    """
    brush = app_brush_px() if brush is None else brush
    drawings = []
    for char in characters:
        for k in range(per_character):
            rng = np.random.default_rng([seed, ord(char), k])
            choices = fonts_for(char, fonts)
            font = choices[(ord(char) + k) % len(choices)]
            buffer = io.BytesIO()
            draw_character(char, font, rng, brush=brush).save(buffer, format="PNG")
            drawings.append(Drawing(char, label_of(char), font, buffer.getvalue()))
    return drawings
