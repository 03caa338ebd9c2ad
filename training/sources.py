"""Where an epoch's images come from: the EMNIST protocol or split, and the extra sources
`train.py` can mix in (typeset glyphs, handwriting fonts, people's corrections), each appended
as a share of the epoch and recorded in the checkpoint's provenance."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from emnist.inference import images_to_tensor
from training import handwriting_fonts
from training.feedback import load_export
from training.font_glyphs import glyph_set, repeats_for
from training.handwriting_fonts import handwriting_set
from training.protocol import DataBundle, load_data


@dataclass
class Data:
    """The training and validation tensors, on the training device."""

    bundle: DataBundle
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor


def load_tensors(args, device: torch.device) -> Data:
    bundle = load_data(protocol=args.protocol, split=args.split, data_root=args.data_root)
    train_x = images_to_tensor(bundle.train_images[: args.limit_train], device)
    train_y = torch.from_numpy(bundle.train_labels[: args.limit_train]).long().to(device)
    val_x = images_to_tensor(bundle.val_images[: args.limit_val], device)
    val_y = torch.from_numpy(bundle.val_labels[: args.limit_val]).long().to(device)
    if args.font_glyphs:
        train_x, train_y = add_font_glyphs(train_x, train_y, bundle.class_names, args.font_glyphs)
    if args.handwriting_fonts:
        train_x, train_y = add_handwriting_fonts(
            train_x, train_y, bundle.class_names, args.handwriting_fonts, args.seed
        )
        bundle.provenance["handwriting_fonts"] = {
            "fraction": args.handwriting_fonts,
            "families": list(handwriting_fonts.TRAINING),
            "files": handwriting_fonts.provenance(handwriting_fonts.TRAINING),
        }
    if args.feedback is not None:
        train_x, train_y, manifest = add_feedback(
            train_x, train_y, bundle.class_names, args.feedback, args.feedback_fraction
        )
        bundle.provenance["feedback"] = {
            "export": str(args.feedback),
            "fraction": args.feedback_fraction,
            "database_sha256": manifest["database_sha256"],
            "images": manifest["parts"]["train"]["images"],
            "writers": manifest["parts"]["train"]["writers"],
        }
    return Data(bundle, train_x, train_y, val_x, val_y)


def add_handwriting_fonts(train_x, train_y, class_names: list[str], fraction: float, seed: int):
    """The training images with handwriting-font renders appended, `fraction` of the total."""
    try:
        images, labels = handwriting_set(class_names, seed=seed)
    except FileNotFoundError as err:
        raise SystemExit(f"error: {err}") from err
    copies = repeats_for(fraction, len(train_x), len(images))
    print(f"handwriting fonts: {len(images):,} renders x {copies} ({fraction:.0%} of each epoch)")
    font_x = images_to_tensor(images, train_x.device).repeat(copies, 1, 1, 1)
    font_y = torch.from_numpy(labels).to(train_y.device).repeat(copies)
    return torch.cat([train_x, font_x]), torch.cat([train_y, font_y])


def add_feedback(train_x, train_y, class_names: list[str], export: Path, fraction: float):
    """The training images with the corrections' training part appended (`fraction` of the
    total, at least once each); returns them and the export's manifest for the checkpoint."""
    images, names, manifest = load_export(export, "train")
    # A digits model learns from the digit corrections only.
    mine = [i for i, name in enumerate(names) if name in class_names]
    if len(mine) < len(names):
        print(f"corrections: {len(names) - len(mine)} for classes this model lacks, left out")
    images, names = images[mine], [names[i] for i in mine]
    if len(images) == 0:
        raise SystemExit(f"error: {export} holds no training corrections for this model's classes")
    labels = np.array([class_names.index(n) for n in names])
    copies = repeats_for(fraction, len(train_x), len(images))
    print(f"corrections: {len(images):,} images x {copies} ({fraction:.0%} of each epoch)")
    extra_x = images_to_tensor(images, train_x.device).repeat(copies, 1, 1, 1)
    extra_y = torch.from_numpy(labels).to(train_y.device).repeat(copies)
    return torch.cat([train_x, extra_x]), torch.cat([train_y, extra_y]), manifest


def add_font_glyphs(train_x, train_y, class_names: list[str], fraction: float):
    """The training images with typeset characters appended, `fraction` of the total."""
    glyphs, labels = glyph_set(class_names)
    copies = repeats_for(fraction, len(train_x), len(glyphs))
    print(f"font glyphs: {len(glyphs):,} renders x {copies} ({fraction:.0%} of each epoch)")
    glyph_x = images_to_tensor(glyphs, train_x.device).repeat(copies, 1, 1, 1)
    glyph_y = torch.from_numpy(labels).to(train_y.device).repeat(copies)
    return torch.cat([train_x, glyph_x]), torch.cat([train_y, glyph_y])
