"""Simulated writers: people who draw in a hand no shipped model was trained on.

Each writer is one of the handwriting font families held out of training
(training/handwriting_fonts.py HELD_OUT; never Hershey fonts, which are for evaluation only),
with a seed of their own for size, slant, rotation, weight and position. They draw the
characters EMNIST models confuse most (O/0, I/1, Z/2, S/5), as the page would send them.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import ImageFont

from training import handwriting_fonts as hw

CONFUSED = "OIZS"


def drawings(
    writer: int, per_character: int, characters: str = CONFUSED
) -> list[tuple[str, bytes]]:
    """(character, PNG) pairs for writer number `writer`."""
    family = hw.family(hw.HELD_OUT[writer % len(hw.HELD_OUT)])
    rng = np.random.default_rng(1000 + writer)
    font = ImageFont.truetype(str(hw.FONT_ROOT / family.files[0]), 160)
    pairs = []
    for char in characters:
        for _ in range(per_character):
            sized = font.font_variant(size=int(rng.integers(*hw.EM_PX)))
            buffer = io.BytesIO()
            hw.render(char, sized, rng).save(buffer, format="PNG")
            pairs.append((char, buffer.getvalue()))
    return pairs


def writer_id(writer: int) -> str:
    return f"simulated{writer:03d}writer"
