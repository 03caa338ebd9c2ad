"""Batched augmentation: shapes, reproducibility, and that each transform really transforms."""

import torch

from training.augment import PRESETS, AugmentConfig, augment_batch


def glyph_batch(n: int = 8) -> torch.Tensor:
    """A bar offset from the centre, so rotations and shifts change the picture."""
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 6:22, 9:13] = 1.0
    return x


def test_identity_config_leaves_images_unchanged():
    identity = AugmentConfig(rotation_deg=0, scale=(1.0, 1.0), shear=0, translate_px=0)
    images = glyph_batch()
    out = augment_batch(images, identity, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, images, atol=1e-5, rtol=0)


def test_none_preset_is_a_no_op():
    images = glyph_batch()
    assert augment_batch(images, PRESETS["none"], torch.Generator()) is images


def test_same_seed_same_result_and_different_seed_differs():
    images = glyph_batch()
    a = augment_batch(images, PRESETS["elastic"], torch.Generator().manual_seed(1))
    b = augment_batch(images, PRESETS["elastic"], torch.Generator().manual_seed(1))
    c = augment_batch(images, PRESETS["elastic"], torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b)
    assert (a - c).abs().max() > 0.1


def test_augmented_images_differ_per_image_but_keep_shape_range_and_ink():
    images = glyph_batch(16)
    out = augment_batch(images, PRESETS["affine"], torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    assert out.min() >= 0 and out.max() <= 1 + 1e-6
    # Each image got its own transform.
    assert (out[0] - out[1]).abs().max() > 0.1
    # Moderate transforms keep most of the ink inside the frame.
    ratio = out.sum(dim=(1, 2, 3)) / images.sum(dim=(1, 2, 3))
    assert ((ratio > 0.6) & (ratio < 1.6)).all()


def test_pure_translation_moves_the_centre_of_mass():
    shift_only = AugmentConfig(rotation_deg=0, scale=(1.0, 1.0), shear=0, translate_px=3)
    images = glyph_batch(32)
    out = augment_batch(images, shift_only, torch.Generator().manual_seed(0))
    cols = torch.arange(28.0)
    com_in = (images.sum(dim=2).squeeze(1) * cols).sum(1) / images.sum(dim=(1, 2, 3))
    com_out = (out.sum(dim=2).squeeze(1) * cols).sum(1) / out.sum(dim=(1, 2, 3))
    moved = (com_out - com_in).abs()
    assert moved.max() > 1.0
    assert moved.max() <= 3.0 + 0.1
