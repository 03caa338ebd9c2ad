"""Handwriting fonts as a training source: letterforms EMNIST's writers rarely used.

Debian packages fonts made from real people's handwriting. Each character of the 47 bymerge
classes (the 62 characters: merged lower cases included) is rendered from them onto the web
app's white canvas at a random size, slant, rotation, stroke weight and position, then converted
by the one preprocessing (`emnist/preprocessing.py`), exactly as a canvas drawing is in serving.

Install the fonts with one command (root): `make fonts`, which runs

    apt-get install fonts-dkg-handwriting fonts-breip fonts-bwht fonts-dancingscript \\
        fonts-ecolier-court fonts-humor-sans fonts-comic-neue

Some families are kept out of training (HELD_OUT): they are the drawing validation set that
picks among candidate models, and the source of simulated writers. The Hershey pen drawings of
`make canvas-realism` stay a test set; Hershey fonts are never trained on.

Some faces draw capitals for a, b, d... (`Family.lower_case`): such a render would teach a
capital under a lower-case label, so those faces give no lower case of their own. Lower cases
that bymerge merges with their capital (c, o, s...) are kept: their label is the capital's.
Provenance (each file, its Debian package and SHA-256) goes into the checkpoint and the model
card.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from emnist import canvas, preprocessing
from emnist.labels import MERGED_CASE

FONT_ROOT = Path("/usr/share/fonts")


@dataclass(frozen=True)
class Family:
    name: str
    package: str
    files: tuple[str, ...]  # under FONT_ROOT
    # False for faces that draw (alternate) capitals for a, b, d...: checked by eye on renders
    # of every face, since a measure of shape cannot tell an alternate capital from a letter.
    lower_case: bool = True


FAMILIES = (
    Family(
        "dkg",
        "fonts-dkg-handwriting",
        tuple(
            f"truetype/fifthhorseman/{f}"
            for f in ("dkg.ttf", "dkgBd.ttf", "dkgIt.ttf", "dkgBI.ttf")
        ),
    ),
    Family("breip", "fonts-breip", ("truetype/breip/Breip.ttf",)),
    Family(
        "bwht",
        "fonts-bwht",
        tuple(
            f"opentype/bwht/BecauseWe{w}-Regular.otf"
            for w in ("Build", "Connect", "Create", "Learn", "Mentor", "Organize")
        ),
        lower_case=False,
    ),
    Family(
        "dancingscript",
        "fonts-dancingscript",
        (
            "opentype/dancingscript/DancingScript-Regular.otf",
            "opentype/dancingscript/DancingScript-Bold.otf",
        ),
    ),
    Family(
        "comic-neue",
        "fonts-comic-neue",
        tuple(
            f"opentype/comic-neue/ComicNeue-{s}.otf"
            for s in ("Regular", "Bold", "Italic", "Light", "BoldItalic", "LightItalic")
        ),
    ),
    Family("ecolier-court", "fonts-ecolier-court", ("truetype/ecolier-court/Ecolier-court.ttf",)),
    Family(
        "humor-sans", "fonts-humor-sans", ("truetype/humor-sans/Humor-Sans.ttf",), lower_case=False
    ),
)
# Never trained on: the drawing validation set and the simulated writers' hands.
HELD_OUT = ("ecolier-court", "humor-sans")
TRAINING = tuple(f.name for f in FAMILIES if f.name not in HELD_OUT)
INSTALL = "make fonts  (apt-get install " + " ".join(sorted({f.package for f in FAMILIES})) + ")"

# How far a render departs from the font: em size in canvas pixels, shear, rotation, extra
# outline width (a heavier pen), and the share of the canvas the offset may take.
EM_PX = (100, 190)
SHEAR = 0.25
ROTATION_DEG = 8.0
STROKE_PX = (0, 5)


def family(name: str) -> Family:
    for f in FAMILIES:
        if f.name == name:
            return f
    raise ValueError(f"unknown font family {name!r}: one of {[f.name for f in FAMILIES]}")


def missing(names: tuple[str, ...]) -> list[str]:
    """The font files of these families that are not installed."""
    return [
        str(FONT_ROOT / p) for n in names for p in family(n).files if not (FONT_ROOT / p).is_file()
    ]


def provenance(names: tuple[str, ...]) -> list[dict]:
    """Every font file of these families with its package and SHA-256."""
    return [
        {
            "family": n,
            "package": family(n).package,
            "file": p,
            "sha256": hashlib.sha256((FONT_ROOT / p).read_bytes()).hexdigest(),
        }
        for n in names
        for p in family(n).files
    ]


def characters_for(class_names: list[str]) -> list[tuple[str, str]]:
    """(character to render, its class name): every class, merged lower cases included."""
    pairs = [(name, name) for name in class_names]
    pairs += [
        (c.lower(), c) for c in MERGED_CASE if c in class_names and c.lower() not in class_names
    ]
    return pairs


def render(char: str, font: ImageFont.FreeTypeFont, rng: np.random.Generator) -> Image.Image:
    """`char` in black on the white canvas, sized, weighted, sheared, turned and placed by `rng`."""
    size = canvas.CANVAS_SIZE
    stroke = int(rng.integers(STROKE_PX[0], STROKE_PX[1] + 1))
    layer = Image.new("L", (2 * size, 2 * size), 0)  # ink on black, transformed, then inverted
    draw = ImageDraw.Draw(layer)
    left, top, right, bottom = draw.textbbox((0, 0), char, font=font, stroke_width=stroke)
    origin = (size - (right + left) / 2, size - (bottom + top) / 2)
    draw.text(origin, char, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
    shear = rng.uniform(-SHEAR, SHEAR)
    layer = layer.transform(
        layer.size, Image.AFFINE, (1, shear, -shear * size, 0, 1, 0), Image.BILINEAR
    )
    layer = layer.rotate(rng.uniform(-ROTATION_DEG, ROTATION_DEG), Image.BILINEAR)
    box = layer.getbbox()
    if box is None:
        return Image.new("L", (size, size), 255)
    glyph = layer.crop(box)
    if max(glyph.size) > size - 8:  # a long swash: shrink it onto the canvas
        glyph.thumbnail((size - 8, size - 8), Image.LANCZOS)
    page = Image.new("L", (size, size), 0)
    x = int(rng.integers(4, max(5, size - glyph.width - 3)))
    y = int(rng.integers(4, max(5, size - glyph.height - 3)))
    page.paste(glyph, (x, y))
    return Image.eval(page, lambda v: 255 - v)


def handwriting_set(
    class_names: list[str],
    names: tuple[str, ...] = TRAINING,
    *,
    per_character: int = 6,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 28, 28) EMNIST-format images and int64 (N,) labels indexing `class_names`:
    `per_character` renders of every character in every face of these families.

    Deterministic for a seed. Raises FileNotFoundError naming the install command when a font
    is missing."""
    absent = missing(names)
    if absent:
        raise FileNotFoundError(
            f"handwriting fonts not installed: {absent[:3]}...; install: {INSTALL}"
        )
    index = {name: i for i, name in enumerate(class_names)}
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for name in names:
        for path in family(name).files:
            font = ImageFont.truetype(str(FONT_ROOT / path), 160)
            for char, label in characters_for(class_names):
                if char.islower() and label == char and not family(name).lower_case:
                    continue  # the face would draw a capital under a lower-case label
                for _ in range(per_character):
                    font = font.font_variant(size=int(rng.integers(*EM_PX)))
                    result = preprocessing.preprocess(render(char, font, rng))
                    if not result.empty:
                        images.append(result.pixels)
                        labels.append(index[label])
    return np.stack(images), np.asarray(labels, dtype=np.int64)
