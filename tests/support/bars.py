"""A small learnable split in NIST's format: class k is a thick bar in band k.

Training tests run on it so that they need no EMNIST files (a fresh clone has none).
"""

from pathlib import Path

import numpy as np

from training.emnist import idx_file_name, mapping_file_name, write_idx

CLASSES = 4


def bar_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Class k is a thick bar in band k with jitter and noise: learnable, not trivially."""
    images = rng.integers(0, 40, size=(len(labels), 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        top = 3 + 6 * int(label) + int(rng.integers(-1, 2))
        left = int(rng.integers(2, 8))
        images[i, top : top + 4, left : left + 16] = 255
    return images


def write_bars_split(root: Path) -> Path:
    """The `digits` split of 4 classes (800 train, 200 test images) under `root`."""
    rng = np.random.default_rng(0)
    (root / mapping_file_name("digits")).write_text(
        "".join(f"{k} {48 + k}\n" for k in range(CLASSES))
    )
    for subset, n in (("train", 800), ("test", 200)):
        labels = rng.integers(0, CLASSES, size=n).astype(np.uint8)
        write_idx(
            root / (idx_file_name("digits", subset, "images") + ".gz"), bar_images(labels, rng)
        )
        write_idx(root / (idx_file_name("digits", subset, "labels") + ".gz"), labels)
    return root
