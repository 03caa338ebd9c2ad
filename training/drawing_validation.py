"""Top-1 on the drawing validation set: renders of the handwriting fonts kept out of training.

    python -m training.drawing_validation runs/release-2.0/emnist-rcnn/best-bn.pt \\
        model_store/emnist-rcnn-1.3.mar

The families of `handwriting_fonts.HELD_OUT` (never trained on), `per_character` renders of
every character of the 47 classes, seed 1 (training renders use seed 0), through the one
preprocessing. A validation set: the shipping rules of runs/release-*/RULE*.md choose between
candidates with it; the canvas-realism drawings and the test sets are never chosen on.
Checkpoints run in-process (float32), archives through their own handler.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from emnist.checkpoint import load_checkpoint, model_from_checkpoint
from emnist.inference import images_to_tensor, predict_logits
from mar import archive
from training.cli import HelpFormatter
from training.handwriting_fonts import HELD_OUT, handwriting_set

PER_CHARACTER, SEED = 6, 1  # the set the shipping rules name


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("models", nargs="+", type=Path, help="checkpoints (.pt) or archives (.mar)")
    p.add_argument(
        "--per-character", type=int, default=PER_CHARACTER, help="renders per character and face"
    )
    p.add_argument("--seed", type=int, default=SEED, help="of the renders")
    return p.parse_args(argv)


def drawing_set(
    names: list[str], per_character: int = PER_CHARACTER, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray]:
    """The drawing validation set for a label map: uint8 images and class indices."""
    return handwriting_set(names, HELD_OUT, per_character=per_character, seed=seed)


def predicted(
    path: Path, images: np.ndarray, precision: str | None = None
) -> tuple[np.ndarray, list[str]]:
    """Top-1 class indices for the images, and the model's class names; an archive answers in
    its own arithmetic unless `precision` says otherwise."""
    if path.suffix == ".mar":
        probabilities, info = archive.probabilities(path, images, precision=precision)
        return probabilities.argmax(1), info["labels"]
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, torch.device("cpu"))
    logits = predict_logits(model, images_to_tensor(images, torch.device("cpu")), batch_size=512)
    return logits.argmax(1).numpy(), list(ckpt["class_names"])


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    results, renders = {}, {}
    for path in args.models:
        _, names = predicted(path, np.zeros((1, 28, 28), dtype=np.uint8))
        key = tuple(names)
        if key not in renders:  # one set per label map (rendered once)
            renders[key] = drawing_set(names, args.per_character, args.seed)
        images, labels = renders[key]
        top1 = float((predicted(path, images)[0] == labels).mean())
        results[str(path)] = top1
        print(f"{path}: drawing validation top-1 {100 * top1:.1f}% ({len(labels)} renders)")
    return results


if __name__ == "__main__":
    main()
