"""Start training from a released checkpoint's weights (`train.py --init-from`).

A fine-tuned checkpoint must say what it was tuned from: its `base` entry keeps the base's file
hash, training configuration, metrics and data provenance, so a model card can name both stages
and `make release` can check that it starts from the intended weights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from emnist.checkpoint import load_checkpoint
from training.protocol import PROJECT_ROOT


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def project_relative(path: Path) -> str:
    """The path as a reader of a model card can follow it: relative to the project when inside it
    (not the release machine's absolute path), as given otherwise; the sha256 identifies it."""
    resolved = Path(path).resolve()
    if resolved.is_relative_to(PROJECT_ROOT.resolve()):
        return str(resolved.relative_to(PROJECT_ROOT.resolve()))
    return str(path)


def load_base(path: Path, arch: str, class_names: list[str], model_args: dict) -> tuple[dict, dict]:
    """(the base checkpoint, its provenance) after checking it fits the model being trained.

    `model_args` are the ones given on the command line: the base's fill in the rest, and any
    given must equal the base's (a different width cannot take these weights).
    """
    base = load_checkpoint(path)
    if base["arch"] != arch:
        raise SystemExit(f"error: {path} holds a {base['arch']!r} model, not {arch!r}")
    if list(base["class_names"]) != list(class_names):
        raise SystemExit(f"error: {path} was trained on other classes than this data's")
    clash = {k: v for k, v in model_args.items() if base["model_args"].get(k) != v}
    if clash:
        raise SystemExit(f"error: {path} was built with {base['model_args']}, not {clash}")
    provenance = {
        "file": project_relative(path),
        "sha256": file_sha256(path),
        "train_config": base.get("train_config"),
        "metrics": base.get("metrics"),
        "data": base.get("data"),
        "base": base.get("base"),  # a base that was itself fine-tuned
    }
    return base, provenance
