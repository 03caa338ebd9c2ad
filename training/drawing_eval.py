"""Read drawings with a released archive exactly as serving does, and score the answers.

A `.mar` carries the checkpoint, the label map (`index_to_name.json`) and the very
`training/preprocessing.py` its handler imports, so "as serving does" means: decode and
preprocess with the archive's own copy of that module, run the checkpoint's model, name classes
with the archive's label map. The repository's current preprocessing can be used instead, to
measure a change before the archives are rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import tempfile
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import nn

from training import preprocessing as repo_preprocessing
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.inference import images_to_tensor, predict_logits
from training.stroke_drawings import LOOKALIKES, Drawing


@dataclass
class ReleasedModel:
    name: str  # the archive's file name
    model: nn.Module
    class_names: list[str]
    preprocessing: ModuleType


def _module_from_source(source: bytes) -> ModuleType:
    """Import a preprocessing.py from its bytes under a name of its own (no sys.path change)."""
    name = f"_archived_preprocessing_{hashlib.sha1(source).hexdigest()[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "preprocessing.py"
        path.write_bytes(source)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return module


def load_released(archive: Path, *, preprocessing: str = "archive") -> ReleasedModel:
    """The model, label map and preprocessing (`archive` or `repo`) of one `.mar`."""
    with zipfile.ZipFile(archive) as mar:
        names = json.loads(mar.read("index_to_name.json"))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "checkpoint.pt"
            path.write_bytes(mar.read("checkpoint.pt"))
            ckpt = load_checkpoint(path)
        source = mar.read("training/preprocessing.py")
    class_names = [names[str(i)] for i in range(len(names))]
    if class_names != list(ckpt["class_names"]):
        raise ValueError(f"{archive.name}: index_to_name.json disagrees with the checkpoint")
    if preprocessing not in ("archive", "repo"):
        raise ValueError(f"preprocessing must be 'archive' or 'repo', got {preprocessing!r}")
    module = _module_from_source(source) if preprocessing == "archive" else repo_preprocessing
    return ReleasedModel(archive.name, model_from_checkpoint(ckpt), class_names, module)


def load_trained(checkpoint: Path) -> ReleasedModel:
    """A training run's checkpoint, read with this checkout's preprocessing (before archiving)."""
    ckpt = load_checkpoint(checkpoint)
    name = f"{checkpoint.parent.name}/{checkpoint.name}"
    return ReleasedModel(
        name, model_from_checkpoint(ckpt), list(ckpt["class_names"]), repo_preprocessing
    )


def drawings_for(released: ReleasedModel, drawings: list[Drawing]) -> list[Drawing]:
    """The drawings of characters the model has a class for (the digits, for a digits model)."""
    known = set(released.class_names)
    return [d for d in drawings if d.label in known]


def preprocess_drawings(released: ReleasedModel, drawings: list[Drawing]) -> np.ndarray:
    """uint8 (N, 28, 28): each drawing's PNG decoded and preprocessed as the handler does."""
    prep = released.preprocessing
    out = [prep.preprocess(prep.decode_image(d.png)) for d in drawings]
    empty = [d.char for d, r in zip(drawings, out, strict=True) if r.empty]
    if empty:
        raise ValueError(f"{len(empty)} drawings preprocessed as blank: {empty[:5]}")
    return np.stack([r.pixels for r in out])


def top3_names(
    released: ReleasedModel, pixels: np.ndarray, *, logit_offset: np.ndarray | None = None
) -> list[list[str]]:
    """The three most probable class names for each preprocessed image.

    `logit_offset` (one value per class) is added to the logits first: -tau * log(train prior)
    asks what a model would answer with the class imbalance of its training data taken out.
    """
    logits = predict_logits(released.model, images_to_tensor(pixels, torch.device("cpu")))
    if logit_offset is not None:
        logits = logits + torch.as_tensor(logit_offset, dtype=logits.dtype)
    top = logits.topk(3, dim=1).indices.tolist()
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
    pixels = preprocess_drawings(released, drawings)
    return score(drawings, top3_names(released, pixels, logit_offset=logit_offset))
