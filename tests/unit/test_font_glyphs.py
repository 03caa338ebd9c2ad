"""Typeset training glyphs (training/font_glyphs.py): classes, orientation, reproducibility."""

import numpy as np
import pytest

from emnist import preprocessing
from emnist.labels import CHARACTERS, label_of
from emnist.preprocessing import emnist_to_upright
from training import font_glyphs

EMNIST47 = list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt")


def test_glyphs_cover_every_class_and_are_reproducible():
    faces = font_glyphs.FONT_FILES[:2]
    images, labels = font_glyphs.glyph_set(EMNIST47, fonts=faces)
    chars = [c for c, _ in font_glyphs.characters_for(EMNIST47)]
    # The merged lower cases (o, s, x...) are typeset too, under their capital's class.
    assert sorted(chars) == sorted(CHARACTERS)
    expected = [EMNIST47.index(label_of(c)) for c in chars for _ in font_glyphs.STROKES]
    assert labels.tolist() == expected * len(faces)
    assert images.shape == (len(expected) * len(faces), 28, 28) and images.dtype == np.uint8
    assert all(image.max() == 255 for image in images)  # nothing came out blank
    again, _ = font_glyphs.glyph_set(EMNIST47, fonts=faces)
    assert np.array_equal(images, again)


def test_glyphs_are_in_emnist_orientation_and_get_heavier_with_the_stroke():
    font = font_glyphs.ImageFont.truetype(
        str(font_glyphs.font_dir() / "DejaVuSans.ttf"), font_glyphs.FONT_PX
    )
    ink = []
    for stroke in font_glyphs.STROKES:
        pixels = preprocessing.preprocess(font_glyphs.render("l", font, stroke)).pixels
        upright = emnist_to_upright(pixels) > 127
        # An "l" stands tall once turned upright: the pixels are stored transposed, as EMNIST's.
        assert upright.any(axis=1).sum() > 2 * upright.any(axis=0).sum()
        ink.append(int(upright.sum()))
    assert ink == sorted(ink) and ink[0] < ink[-1]


def test_every_face_is_found_and_a_missing_one_is_named(tmp_path):
    assert all((font_glyphs.font_dir() / face).is_file() for face in font_glyphs.FONT_FILES)
    with pytest.raises(FileNotFoundError, match=r"DejaVuSans\.ttf"):
        font_glyphs.glyph_set(["0"], folder=tmp_path)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_a_fraction_outside_0_1_is_refused(fraction):
    with pytest.raises(ValueError, match="fraction"):
        font_glyphs.repeats_for(fraction, 100, 10)


def test_repeats_make_the_requested_share():
    copies = font_glyphs.repeats_for(0.1, 101_254, 3_906)
    assert copies == 3 and 0.09 < copies * 3_906 / (101_254 + copies * 3_906) < 0.11
