"""Reproduce the shipped models from the data: train, evaluate, archive, check the archive.

    python -m release.recipe --version 1.1            # every default model (make release)
    python -m release.recipe --version 1.1 --only emnist-cnn --epochs 1   # a quick try
    python -m release.recipe --version 1.2 --only emnist-cnn \
        --base emnist-cnn=model_store/emnist-cnn-1.1.mar     # fine-tune stages only

For each recipe below: `training.train` into runs/release-<version>/<name>/ (validation picks the
checkpoint; the test set is not looked at); for the 47-class models that is the base, then a
one-epoch fine-tune with typeset glyphs and `training.recalibrate` (FINE_TUNE below; `--base`
starts from a released archive's checkpoint instead of training the base again);
`training.evaluate` on the complete test set,
`serving.archive` with those figures in the model card, then `training.evaluate` of the new
archive through its own handler, which must agree with the checkpoint's figures. The archive
lands in model_store/ (never overwriting a version); make it the default with
`make set-default` on a running server and in config.properties' `models=`.

Runs on a GPU when there is one (minutes on an H100, see README "Released models") and on the
CPU otherwise (hours: pass --epochs to shorten).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from emnist.files import atomic_write
from mar import archive as mar_archive
from serving import archive
from training import evaluate, recalibrate, train
from training.cli import HelpFormatter
from training.protocol import PROJECT_ROOT

# The recipes of the released models: every option not named here is train.py's default.
RECIPES: dict[str, list[str]] = {
    "emnist-cnn": ["--arch", "cnn", "--protocol", "emnist47", "--epochs", "60"],
    "emnist-rcnn": [
        "--arch",
        "rcnn",
        "--model-arg",
        "norm=bn",
        "--protocol",
        "emnist47",
        "--epochs",
        "35",
    ],
    # 10 classes, trained and tested on digits only (EMNIST-47 cannot be scored on the complete
    # mnist test set: 1,260 of its images are in the 47-class training pool).
    "emnist-digits": ["--arch", "cnn", "--protocol", "digits", "--epochs", "8"],
}
# Since 1.2 the 47-class models are then fine-tuned for one epoch with typeset glyphs mixed in
# (training/font_glyphs.py: drawings in serif and slanted letterforms EMNIST lacks) and get
# batch-norm statistics of clean training images (training/recalibrate.py); docs/results.md
# has the measurements behind both steps.
FINE_TUNE = ["--epochs", "1", "--lr", "1e-4", "--warmup-epochs", "0", "--font-glyphs", "0.1"]
FINE_TUNED = ("emnist-cnn", "emnist-rcnn")
# Figures of an archive evaluated through its handler and of its checkpoint in-process agree
# to float rounding; a larger gap means the archive does not serve what was trained.
AGREEMENT = 1e-3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--version", required=True, help="release version, e.g. 1.1")
    p.add_argument("--only", choices=sorted(RECIPES), action="append", help="one model only")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument(
        "--base",
        action="append",
        default=[],
        metavar="NAME=CHECKPOINT",
        help="fine-tune NAME from this checkpoint or .mar archive instead of training its base "
        "first, e.g. emnist-cnn=model_store/emnist-cnn-1.1.mar",
    )
    p.add_argument(
        "--train-arg",
        action="append",
        default=[],
        help="extra training option, e.g. --train-arg=--limit-train=512 (for trial runs)",
    )
    p.add_argument(
        "--eval-limit", type=int, default=None, help="evaluate the first N test images only"
    )
    p.add_argument("--store", type=Path, default=PROJECT_ROOT / "model_store", help="model store")
    p.add_argument(
        "--runs", type=Path, default=PROJECT_ROOT / "runs", help="where training runs go"
    )
    return p.parse_args(argv)


def release_one(name: str, args: argparse.Namespace) -> Path:
    run = args.runs / f"release-{args.version}" / name
    target = args.store / f"{name}-{args.version}.mar"
    if target.exists():  # checked before hours of training, not after
        raise SystemExit(f"error: {target} exists; a released version never changes")
    recipe = list(RECIPES[name])
    if args.epochs is not None:
        recipe[recipe.index("--epochs") + 1] = str(args.epochs)
    common = [*args.train_arg, "--seed", str(args.seed), "--no-progress"]
    if name not in FINE_TUNED:
        print(f"== {name} {args.version}: train {' '.join(recipe)} --seed {args.seed}", flush=True)
        train.main([*recipe, *common, "--out", str(run)])
        checkpoint = run / "best.pt"
    else:
        base = args.bases.get(name)
        if base is not None and base.suffix == ".mar":
            base = checkpoint_from_archive(base, run / f"base-{base.stem}.pt")
        if base is None:
            print(f"== {name} {args.version}: base {' '.join(recipe)} --seed {args.seed}")
            train.main([*recipe, *common, "--out", str(run / "base")])
            base = run / "base" / "best.pt"
        print(f"== {name} {args.version}: fine-tune {base} {' '.join(FINE_TUNE)}", flush=True)
        # The recipe's arguments again (arch, data, model args); FINE_TUNE's --epochs wins.
        tuned = run / "fine-tune"
        train.main([*recipe, *FINE_TUNE, *common, "--init-from", str(base), "--out", str(tuned)])
        checkpoint = run / "best.pt"
        recalibrate.main([str(tuned / "best.pt"), "--out", str(checkpoint)])
    limit = [] if args.eval_limit is None else ["--limit", str(args.eval_limit)]
    tested = evaluate.main([str(checkpoint), *limit, "--out", str(run / "eval-test")])
    mar = archive.main(
        [
            str(checkpoint),
            "--name",
            name,
            "--version",
            args.version,
            "--store",
            str(args.store),
            "--test-metrics",
            str(run / "eval-test" / "metrics.json"),
        ]
    )
    served = evaluate.main([str(mar), *limit, "--out", str(run / "eval-archive")])
    if abs(served["top1"] - tested["top1"]) > AGREEMENT:
        raise SystemExit(
            f"error: {mar} scores {served['top1']:.4%} through its handler but its checkpoint "
            f"{tested['top1']:.4%}: the archive does not serve what was trained"
        )
    return mar


def checkpoint_from_archive(mar: Path, target: Path) -> Path:
    """The checkpoint a released archive serves, written to `target`."""
    data = mar_archive.read_member(mar, mar_archive.manifest(mar)["serializedFile"])
    atomic_write(target, data)  # creates the run folder
    return target


def parse_base(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or name not in FINE_TUNED:
        raise SystemExit(f"error: --base takes NAME=CHECKPOINT, NAME one of {FINE_TUNED}")
    if not Path(path).is_file():
        raise SystemExit(f"error: --base {name}: {path} not found")
    return name, Path(path)


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    args.bases = dict(parse_base(text) for text in args.base)  # checked before any training
    released = [release_one(name, args) for name in (args.only or sorted(RECIPES))]
    print("released: " + ", ".join(str(p) for p in released))
    return released


if __name__ == "__main__":
    main()
