"""The options of `python -m training.train`, with their defaults visible in --help."""

import argparse
import ast
from pathlib import Path

from emnist.models import list_models
from training import precision
from training.augment import PRESETS
from training.cli import HelpFormatter, add_data_arguments

DESCRIPTION = __doc__


def parse_args(argv: list[str] | None, description: str = DESCRIPTION) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m training.train", description=description, formatter_class=HelpFormatter
    )
    p.add_argument("--arch", choices=list_models(), default="cnn", help="registered model")
    p.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="constructor argument, e.g. --model-arg width=96 --model-arg norm=bn",
    )
    add_data_arguments(p, default_source="emnist47")
    p.add_argument("--limit-train", type=int, default=None, help="train on the first N images")
    p.add_argument("--limit-val", type=int, default=None, help="validate on the first N images")
    p.add_argument("--epochs", type=int, default=20, help="passes over the training set")
    p.add_argument("--batch-size", type=int, default=256, help="images per step")
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw", help="SGD: Nesterov")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=0.05, help="decoupled (AdamW-style)")
    p.add_argument(
        "--schedule",
        choices=["cosine", "onecycle", "constant"],
        default="cosine",
        help="learning-rate schedule, per step",
    )
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up")
    p.add_argument("--label-smoothing", type=float, default=0.1, help="of the cross-entropy")
    p.add_argument(
        "--augment",
        choices=list(PRESETS),
        default="affine",
        help="batched augmentation preset (training/augment.py)",
    )
    p.add_argument(
        "--font-glyphs",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="share of each epoch that is typeset characters (training/font_glyphs.py; 0 = none)",
    )
    p.add_argument(
        "--handwriting-fonts",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="share of each epoch rendered from handwriting fonts "
        "(training/handwriting_fonts.py; `make fonts` installs them; 0 = none)",
    )
    p.add_argument(
        "--feedback",
        type=Path,
        default=None,
        metavar="EXPORT",
        help="people's corrections: the training part of `python -m training.feedback export`",
    )
    p.add_argument(
        "--feedback-fraction",
        type=float,
        default=0.1,
        help="share of each epoch that is corrections (with --feedback)",
    )
    p.add_argument(
        "--init-from",
        type=Path,
        default=None,
        metavar="CHECKPOINT",
        help="start from this checkpoint's weights (fine-tuning; its model args are reused)",
    )
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of weights (0 = off)")
    p.add_argument("--seed", type=int, default=0, help="weights, shuffling and augmentation")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--precision",
        choices=precision.CHOICES,
        default="auto",
        help="arithmetic: auto = bf16 autocast where the hardware has native bf16 "
        "(training/precision.py), else fp32; weights and optimizer state stay float32",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--out", default=None, help="run folder (default runs/<arch>-<data>-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    p.add_argument("--no-progress", action="store_true", help="no per-batch progress bar")
    p.add_argument(
        "--dry-run", action="store_true", help="seconds-long smoke run: 1 epoch on 512 images"
    )
    args = p.parse_args(argv)
    if args.protocol is None and args.split is None:
        args.protocol = "emnist47"
    if args.dry_run:
        args.epochs, args.limit_train, args.limit_val = 1, 512, 256
    if args.out is None:
        args.out = f"runs/{args.arch}-{args.protocol or args.split}-s{args.seed}"
    return args


def parse_model_args(pairs: list[str]) -> dict:
    """KEY=VALUE strings to constructor kwargs; values are Python literals or plain strings."""
    kwargs = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--model-arg expects KEY=VALUE, got {pair!r}")
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value
    return kwargs
