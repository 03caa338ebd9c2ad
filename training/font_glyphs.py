"""Typeset characters as training images: letterforms EMNIST's writers rarely used.

EMNIST holds the hand print of NIST's forms: almost no serifs, no italic or joined letterforms,
and O and 0 drawn alike. People drawing on the web app's canvas bring all of those. This module
renders every character of a label map in outline fonts, filled as a font renderer fills them
(not pen strokes: the canvas-realism benchmark draws Hershey pen paths, a source kept out of
training so that it stays a check), at three weights, on the web app's white 280x280 canvas, and
converts each render with the one preprocessing (`emnist/preprocessing.py`), exactly as a
canvas drawing is converted in serving. Training mixes them into the EMNIST images
(`train.py --font-glyphs FRACTION`) where the usual augmentation varies them further.

The fonts are the DejaVu and STIX families that matplotlib ships in `mpl-data/fonts/ttf` (so the
pinned matplotlib in requirements.txt pins the fonts too; no system fonts are read, so every
machine renders the same pixels).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from emnist import preprocessing

# bymerge merges the cases of these letters: their lower-case forms are typeset too, labelled
# with the capital (the same characters the canvas evaluation draws).
from emnist.labels import MERGED_CASE

# Sans, serif and monospace, upright and slanted, regular and bold: 16 faces.
FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
)
CANVAS = 280  # the web app's export size (app.js EXPORT_SIDE)
FONT_PX = 160  # em size: capitals about 115 px tall, as a character drawn on the canvas
# Extra outline width in pixels: the font's own weight, then heavier, as a thick pen makes it.
STROKES = (0, 3, 6)


def font_dir() -> Path:
    """matplotlib's bundled TrueType folder, found without importing matplotlib."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("font glyphs need matplotlib (pinned in requirements.txt)")
    return Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf"


def characters_for(class_names: list[str]) -> list[tuple[str, str]]:
    """(character to typeset, its class name) for every class, merged lower cases included."""
    pairs = [(name, name) for name in class_names]
    merged = [c for c in MERGED_CASE if c in class_names and c.lower() not in class_names]
    pairs += [(c.lower(), c) for c in merged]
    return pairs


def render(char: str, font: ImageFont.FreeTypeFont, stroke: int) -> Image.Image:
    """Black `char` centred on a white canvas, as a user would draw it."""
    image = Image.new("L", (CANVAS, CANVAS), 255)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), char, font=font, stroke_width=stroke)
    origin = ((CANVAS - (right - left)) / 2 - left, (CANVAS - (bottom - top)) / 2 - top)
    draw.text(origin, char, font=font, fill=0, stroke_width=stroke, stroke_fill=0)
    return image


def glyph_set(
    class_names: list[str], fonts: tuple[str, ...] = FONT_FILES, folder: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 28, 28) EMNIST-format images and int64 (N,) labels indexing `class_names`.

    Deterministic: the same fonts give the same pixels. A face that lacks a character (its
    render is blank) is skipped for that character.
    """
    folder = font_dir() if folder is None else folder
    index = {name: i for i, name in enumerate(class_names)}
    images, labels = [], []
    for file in fonts:
        path = folder / file
        if not path.is_file():
            raise FileNotFoundError(f"font {path} not found (matplotlib's bundled fonts)")
        font = ImageFont.truetype(str(path), FONT_PX)
        for char, label in characters_for(class_names):
            for stroke in STROKES:
                result = preprocessing.preprocess(render(char, font, stroke))
                if not result.empty:
                    images.append(result.pixels)
                    labels.append(index[label])
    if not images:
        raise ValueError("no glyph could be rendered")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def repeats_for(fraction: float, emnist_images: int, glyph_images: int) -> int:
    """How many copies of the glyph set make `fraction` of an epoch's images (at least one)."""
    if not 0 < fraction < 1:
        raise ValueError(f"the font-glyph fraction must be in (0, 1), got {fraction}")
    return max(1, round(fraction * emnist_images / ((1 - fraction) * glyph_images)))
