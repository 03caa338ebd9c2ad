"""Read drawings with a released archive exactly as serving does, and score the answers.

"As serving does" means through the archive's own handler (mar/archive.py): its decoding and
preprocessing, its model and softmax, its label map, in an interpreter that sees nothing of the
repository. The repository's current preprocessing can be used instead (`preprocessing="repo"`)
to measure a change before the archives are rebuilt; the archive's model still reads the result.
A training run's checkpoint is read in-process with this checkout's code (before archiving).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emnist import preprocessing as repo_preprocessing
from emnist.charsets import allows
from emnist.checkpoint import load_checkpoint, model_from_checkpoint
from emnist.inference import images_to_tensor, predict_logits
from emnist.labels import LOOKALIKES
from evaluation.stroke_drawings import Drawing
from mar import archive as mar_archive


@dataclass
class ReleasedModel:
    """A model that reads drawings: an archive (run through its handler) or a checkpoint."""

    name: str  # the archive's file name, or run/checkpoint
    class_names: list[str]
    archive: Path | None = None  # read through this archive's own code
    model: nn.Module | None = None  # or in-process, with this checkout's code
    preprocessing: str = "archive"  # "archive" or "repo"

    def preprocess(self, pngs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (N, 28, 28) pixels and blank flags for image files."""
        if self.archive is not None and self.preprocessing == "archive":
            return mar_archive.preprocess(self.archive, pngs)
        out = [repo_preprocessing.preprocess(repo_preprocessing.decode_image(p)) for p in pngs]
        return np.stack([r.pixels for r in out]), np.array([r.empty for r in out])

    def log_probabilities(self, pixels: np.ndarray) -> torch.Tensor:
        """Log-softmax scores (N, classes): the handler's probabilities, or the model's."""
        if self.archive is not None:
            probabilities, _ = mar_archive.probabilities(self.archive, pixels)
            return torch.from_numpy(probabilities).clamp_min(1e-12).log()
        logits = predict_logits(self.model, images_to_tensor(pixels, torch.device("cpu")))
        return torch.log_softmax(logits.float(), dim=1)


def load_released(archive: Path, *, preprocessing: str = "archive") -> ReleasedModel:
    """A `.mar` whose handler reads the drawings; `preprocessing="repo"` preprocesses them with
    this checkout's code instead of the archive's."""
    if preprocessing not in ("archive", "repo"):
        raise ValueError(f"preprocessing must be 'archive' or 'repo', got {preprocessing!r}")
    class_names = mar_archive.labels(archive)
    if class_names != list(mar_archive.checkpoint(archive)["class_names"]):
        raise ValueError(f"{archive.name}: index_to_name.json disagrees with the checkpoint")
    return ReleasedModel(archive.name, class_names, archive=archive, preprocessing=preprocessing)


def load_trained(checkpoint: Path) -> ReleasedModel:
    """A training run's checkpoint, read with this checkout's preprocessing (before archiving)."""
    ckpt = load_checkpoint(checkpoint)
    # Named by its path as given: runs of several models and seeds all end in best.pt.
    return ReleasedModel(
        str(checkpoint),
        list(ckpt["class_names"]),
        model=model_from_checkpoint(ckpt),
        preprocessing="repo",
    )


def drawings_for(released: ReleasedModel, drawings: list[Drawing]) -> list[Drawing]:
    """The drawings of characters the model has a class for (the digits, for a digits model)."""
    known = set(released.class_names)
    return [d for d in drawings if d.label in known]


def preprocess_drawings(released: ReleasedModel, drawings: list[Drawing]) -> np.ndarray:
    """uint8 (N, 28, 28): each drawing's PNG decoded and preprocessed as the handler does."""
    pixels, empty = released.preprocess([d.png for d in drawings])
    blank = [d.char for d, e in zip(drawings, empty, strict=True) if e]
    if blank:
        raise ValueError(f"{len(blank)} drawings preprocessed as blank: {blank[:5]}")
    return pixels


def top3_names(
    released: ReleasedModel,
    pixels: np.ndarray,
    *,
    logit_offset: np.ndarray | None = None,
    charset: str = "any",
) -> list[list[str]]:
    """The three most probable class names for each preprocessed image.

    `logit_offset` (one value per class) is added to the log-probabilities first (the same as
    adding it to the logits): -tau * log(train prior) asks what a model would answer with the
    class imbalance of its training data taken out. `charset` keeps only its classes, as the
    app does when a person says what they are writing (emnist/charsets.py).
    """
    return ranked_names(released, released.log_probabilities(pixels), logit_offset, charset)


def ranked_names(
    released: ReleasedModel,
    scores: torch.Tensor,
    logit_offset: np.ndarray | None = None,
    charset: str = "any",
) -> list[list[str]]:
    """`top3_names` from log-probabilities already computed (one model pass, many readings)."""
    if logit_offset is not None:
        scores = scores + torch.as_tensor(logit_offset, dtype=scores.dtype)
    if charset != "any":
        allowed = torch.tensor([allows(name, charset) for name in released.class_names])
        scores = scores.masked_fill(~allowed, float("-inf"))
    top = scores.topk(3, dim=1).indices.tolist()
    return [[released.class_names[i] for i in row] for row in top]


def score(drawings: list[Drawing], answers: list[list[str]]) -> dict:
    """Top-1, top-3, top-1 with look-alikes merged, per class, per font, most common confusions.

    Fractions, not percentages. `merged` counts a drawing of 0 read as O (see LOOKALIKES) right.
    """
    per_class: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    per_font: dict[str, list[bool]] = defaultdict(list)
    confusions: Counter = Counter()
    top1 = top3 = merged = lookalike_errors = 0
    for drawing, answer in zip(drawings, answers, strict=True):
        hit1, hit3 = answer[0] == drawing.label, drawing.label in answer
        alike = answer[0] in LOOKALIKES.get(drawing.char, "")
        top1, top3 = top1 + hit1, top3 + hit3
        merged += hit1 or alike
        per_class[drawing.label].append((hit1, hit3))
        per_font[drawing.font].append(hit1)
        if not hit1:
            confusions[drawing.char, answer[0]] += 1
            lookalike_errors += alike
    n = len(drawings)
    errors = n - top1
    return {
        "n": n,
        "top1": top1 / n,
        "top3": top3 / n,
        "top1_lookalikes_merged": merged / n,
        "lookalike_share_of_errors": lookalike_errors / errors if errors else 0.0,
        "per_class": {
            label: {
                "n": len(hits),
                "top1": sum(h for h, _ in hits) / len(hits),
                "top3": sum(h for _, h in hits) / len(hits),
            }
            for label, hits in sorted(per_class.items())
        },
        "per_font": {font: sum(h) / len(h) for font, h in sorted(per_font.items())},
        "confusions": [
            {"drawn": c, "read_as": p, "count": k} for (c, p), k in confusions.most_common(15)
        ],
    }


def evaluate(
    released: ReleasedModel, drawings: list[Drawing], *, logit_offset: np.ndarray | None = None
) -> dict:
    """`score` of the drawings, plus the letters read with and without `charset=letters`."""
    pixels = preprocess_drawings(released, drawings)
    scores = released.log_probabilities(pixels)  # once: each archive run is an interpreter
    answers = ranked_names(released, scores, logit_offset)
    result = score(drawings, answers)
    letters = [i for i, d in enumerate(drawings) if d.char.isalpha()]
    if letters and any(name.isalpha() for name in released.class_names):
        drawn = [drawings[i] for i in letters]
        unrestricted = [answers[i] for i in letters]
        restricted = ranked_names(released, scores[letters], logit_offset, "letters")
        result["letters"] = {
            "n": len(letters),
            "top1": sum(a[0] == d.label for a, d in zip(unrestricted, drawn, strict=True))
            / len(drawn),
            "top1_charset_letters": sum(
                a[0] == d.label for a, d in zip(restricted, drawn, strict=True)
            )
            / len(drawn),
        }
    return result
