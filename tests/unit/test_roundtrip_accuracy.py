"""Accuracy survives the canvas: round-tripped EMNIST test images read as well as originals.

Real bymerge test images are painted as canvas-like pictures (280x280, upright, off-centre, at
random scales, dark-on-white, white-on-black or transparent PNG), decoded and preprocessed by the
one preprocessing module, and classified by the released CNN (model_store/).
"""

import numpy as np
import pytest
import torch
from support.servers import latest_released

from emnist.checkpoint import model_from_checkpoint
from emnist.inference import images_to_tensor, predict_logits
from emnist.preprocessing import preprocess
from evaluation.canvas_like import render, to_png
from mar import archive

SAMPLE = 2000


@pytest.fixture(scope="module")
def released_cnn(tmp_path_factory):
    """The released CNN's checkpoint, read out of its archive in model_store/."""
    return model_from_checkpoint(archive.checkpoint(latest_released("emnist-cnn")))


@pytest.mark.slow
@pytest.mark.shared_data
def test_accuracy_on_round_tripped_images_stays_within_1_5_points(emnist47_bundle, released_cnn):
    model = released_cnn
    rng = np.random.default_rng(0)
    pick = rng.choice(len(emnist47_bundle.test_labels), size=SAMPLE, replace=False)
    originals = emnist47_bundle.test_images[pick]
    labels = torch.from_numpy(emnist47_bundle.test_labels[pick]).long()
    results = [preprocess(to_png(render(image, rng))) for image in originals]
    assert not any(r.empty for r in results)
    round_tripped = np.stack([r.pixels for r in results])

    def accuracy(images: np.ndarray) -> float:
        logits = predict_logits(model, images_to_tensor(images, torch.device("cpu")))
        return (logits.argmax(1) == labels).float().mean().item()

    original_acc, round_trip_acc = accuracy(originals), accuracy(round_tripped)
    print(
        f"top-1 on {SAMPLE} bymerge test images: originals {100 * original_acc:.2f}%, "
        f"round-tripped {100 * round_trip_acc:.2f}%"
    )
    assert original_acc > 0.85, "the released model should be a real classifier"
    assert abs(original_acc - round_trip_acc) <= 0.015
