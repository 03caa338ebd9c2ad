"""The promotion gate: one rule, judged with both versions registered in a running TorchServe.

A candidate may replace the default version of its model only if, with every figure measured
through TorchServe (`POST /predictions/<model>/<version>`) and equal to the same figure measured
offline (the archive's own handler in a clean interpreter, mar/archive.py), answer for answer:

1. EMNIST validation top-1: the candidate loses at most MAX_VALIDATION_LOSS (0.2 points);
2. the held-out writers' corrections: the candidate reads strictly more of them right;
3. the canvas-realism drawings (Hershey pen paths, seed 0): the candidate reads at least as many.

The validation images are the model protocol's validation split (never the test set), sent as
28x28 PNGs; the corrections are the pictures people sent, from writers none of whose
corrections were trained on; the drawings come from a source no model was trained on.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests
from PIL import Image

from emnist.preprocessing import emnist_to_upright
from evaluation.stroke_drawings import drawing_set
from mar import archive as mar_archive
from serving.management import Endpoints
from training.feedback import load_originals
from training.protocol import load_data

MAX_VALIDATION_LOSS = 0.002  # 0.2 points of top-1
RULE = (
    "through TorchServe, equal to offline: validation top-1 at most 0.2 points below the "
    "default's, strictly more held-out corrections read right, no fewer canvas drawings"
)


@dataclass
class Sample:
    name: str
    bodies: list[bytes]
    labels: list[str]


def png(pixels) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(emnist_to_upright(pixels)).save(buffer, format="PNG")
    return buffer.getvalue()


def samples(
    class_names: list[str],
    protocol: str,
    export: Path,
    *,
    val_limit: int | None = None,
    drawings_per_character: int = 20,
) -> list[Sample]:
    """The three evaluation sets of the rule, as image files and class names."""
    bundle = load_data(protocol=protocol)
    images = bundle.val_images[:val_limit]
    validation = Sample(
        "validation",
        [png(p) for p in images],
        [bundle.class_names[i] for i in bundle.val_labels[: len(images)]],
    )
    known = set(class_names)
    bodies, labels = load_originals(export, "heldout")
    mine = [i for i, label in enumerate(labels) if label in known]  # digits model: digits
    corrections = Sample(
        "heldout_corrections", [bodies[i] for i in mine], [labels[i] for i in mine]
    )
    drawn = [d for d in drawing_set(drawings_per_character, seed=0) if d.label in known]
    drawings = Sample("canvas_drawings", [d.png for d in drawn], [d.label for d in drawn])
    return [validation, corrections, drawings]


def served_top1(endpoints: Endpoints, model: str, version: str, bodies: list[bytes]) -> list[str]:
    """Each image's top-1 label from TorchServe, four requests in flight."""
    session = requests.Session()
    url = f"{endpoints.inference}/predictions/{model}/{version}"
    headers = {"Content-Type": "image/png", "X-TopK": "1"}
    headers |= endpoints.headers("inference")

    def ask(body: bytes) -> str:
        response = session.post(url, data=body, headers=headers, timeout=60)
        response.raise_for_status()
        predictions = response.json().get("predictions") or [{"label": ""}]
        return predictions[0]["label"]

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(ask, bodies))


def offline_top1(archive: Path, bodies: list[bytes]) -> list[str]:
    answers, _ = mar_archive.handle(archive, bodies)
    return [(a.get("predictions") or [{"label": ""}])[0]["label"] for a in answers]


def judge(
    endpoints: Endpoints,
    model: str,
    versions: dict[str, Path],
    sets: list[Sample],
) -> dict:
    """Figures of `versions` ({"default": archive, "candidate": archive}) on every set, and the
    verdict of the rule."""
    figures: dict[str, dict] = {}
    reasons = []
    for role, archive in versions.items():
        version = mar_archive.manifest(archive)["modelVersion"]
        figures[role] = {"version": version}
        for sample in sets:
            served = served_top1(endpoints, model, version, sample.bodies)
            offline = offline_top1(archive, sample.bodies)
            right = sum(a == b for a, b in zip(served, sample.labels, strict=True))
            figures[role][sample.name] = {
                "n": len(sample.labels),
                "top1": right / max(1, len(sample.labels)),
                "served_equals_offline": served == offline,
            }
            if served != offline:
                differ = sum(a != b for a, b in zip(served, offline, strict=True))
                reasons.append(f"{role} {sample.name}: TorchServe and offline differ on {differ}")
    new, old = figures["candidate"], figures["default"]
    if new["validation"]["top1"] < old["validation"]["top1"] - MAX_VALIDATION_LOSS:
        reasons.append(
            f"validation top-1 {new['validation']['top1']:.4f} is more than 0.2 points below "
            f"{old['validation']['top1']:.4f}"
        )
    if not new["heldout_corrections"]["n"]:
        reasons.append("no held-out corrections to judge by")
    elif new["heldout_corrections"]["top1"] <= old["heldout_corrections"]["top1"]:
        reasons.append(
            f"held-out corrections {new['heldout_corrections']['top1']:.4f}, not above the "
            f"default's {old['heldout_corrections']['top1']:.4f}"
        )
    if new["canvas_drawings"]["top1"] < old["canvas_drawings"]["top1"]:
        reasons.append(
            f"canvas drawings {new['canvas_drawings']['top1']:.4f} below the default's "
            f"{old['canvas_drawings']['top1']:.4f}"
        )
    return {"passed": not reasons, "reasons": reasons, "figures": figures, "rule": RULE}
