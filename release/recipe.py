"""Reproduce the shipped models from the data: train, evaluate, archive, check the archive.

    python -m release.recipe --version 2.0            # every default model (make release)
    python -m release.recipe --version 2.0 --only emnist-cnn --epochs 1   # a quick try
    python -m release.recipe --version 1.2 --only emnist-cnn \
        --base emnist-cnn=model_store/emnist-cnn-1.1.mar     # 1.x: fine-tune stages only

Since 2.0 (RECIPES below) each model is trained from scratch in one run (bf16 where the CPU has
it, typeset glyphs and handwriting fonts mixed in: `make fonts`), then gets batch-norm
statistics of clean training images (`training.recalibrate`). The 1.x recipes (RECIPES_1) trained
a base and fine-tuned it for one epoch with typeset glyphs (FINE_TUNE; `--base` starts from a
released archive's checkpoint instead of training the base again). Validation picks every
checkpoint; the test set is not looked at. Then `training.evaluate` on the complete test set,
`serving.archive` with those figures in the model card (the archive defaults: bf16 where native,
2 workers, batch 8 without delay: docs/benchmarks/sweep.md), and `training.evaluate` of the new
archive through its own handler, which must agree with the checkpoint's figures. The archive
lands in model_store/ (never overwriting a version); make it the default with
`make set-default` on a running server and in config.properties' `models=`.

On these 2 CPU cores 2.0 takes about 1.5 h for emnist-cnn and 1.5-2 h for emnist-rcnn (epoch
times in docs/training.md); on a GPU, minutes. --epochs shortens a trial.
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

# From 2.0: every option not named here is train.py's default (bf16 where native, EMA, affine
# augmentation, cosine schedule); runs/release-2.0/*/RULE*.md hold the shipping rules.
FONTS = ["--font-glyphs", "0.05", "--handwriting-fonts", "0.08"]
RECIPES: dict[str, list[str]] = {
    "emnist-cnn": ["--arch", "cnn", "--protocol", "emnist47", "--epochs", "40", *FONTS],
    # RCNN-96 with batch norm; 18 epochs: every RCNN run so far peaked on validation by 14-17.
    "emnist-rcnn": [
        *("--arch", "rcnn", "--model-arg", "norm=bn", "--protocol", "emnist47"),
        *("--epochs", "18", *FONTS),
    ],
    # 10 classes, trained and tested on digits only (EMNIST-47 cannot be scored on the complete
    # mnist test set: 1,260 of its images are in the 47-class training pool).
    "emnist-digits": ["--arch", "cnn", "--protocol", "digits", "--epochs", "8"],
}
RECALIBRATED = ("emnist-cnn", "emnist-rcnn")
# The 1.x recipes: a base run, then one fine-tune epoch with typeset glyphs mixed in
# (training/font_glyphs.py) and clean batch-norm statistics (training/recalibrate.py);
# docs/results.md has the measurements behind both steps.
RECIPES_1: dict[str, list[str]] = {
    "emnist-cnn": ["--arch", "cnn", "--protocol", "emnist47", "--epochs", "60"],
    "emnist-rcnn": [
        *("--arch", "rcnn", "--model-arg", "norm=bn", "--protocol", "emnist47"),
        *("--epochs", "35"),
    ],
    "emnist-digits": RECIPES["emnist-digits"],
}
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
    legacy = args.version.split(".")[0] == "1"
    recipe = list((RECIPES_1 if legacy else RECIPES)[name])
    if args.epochs is not None:
        recipe[recipe.index("--epochs") + 1] = str(args.epochs)
    common = [*args.train_arg, "--seed", str(args.seed), "--no-progress"]
    if not legacy or name not in FINE_TUNED:
        print(f"== {name} {args.version}: train {' '.join(recipe)} --seed {args.seed}", flush=True)
        trained = run / "train" if name in RECALIBRATED and not legacy else run
        train.main([*recipe, *common, "--out", str(trained)])
        checkpoint = run / "best.pt"
        if trained != run:
            recalibrate.main([str(trained / "best.pt"), "--out", str(checkpoint)])
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
    # Through its handler in float32, which must give the checkpoint's figures; then as served
    # (bf16 where the CPU has it), for the record.
    exact = ["--precision", "fp32", "--out", str(run / "eval-archive")]
    served = evaluate.main([str(mar), *limit, *exact])
    if abs(served["top1"] - tested["top1"]) > AGREEMENT:
        raise SystemExit(
            f"error: {mar} scores {served['top1']:.4%} through its handler but its checkpoint "
            f"{tested['top1']:.4%}: the archive does not serve what was trained"
        )
    evaluate.main([str(mar), *limit, "--out", str(run / "eval-served")])
    return mar


def checkpoint_from_archive(mar: Path, target: Path) -> Path:
    """The checkpoint a released archive serves, written to `target`."""
    data = mar_archive.read_member(mar, mar_archive.manifest(mar)["serializedFile"])
    atomic_write(target, data)  # creates the run folder
    return target


def parse_base(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or name not in FINE_TUNED:
        raise SystemExit(
            f"error: --base takes NAME=CHECKPOINT, NAME one of {FINE_TUNED} (1.x releases)"
        )
    if not Path(path).is_file():
        raise SystemExit(f"error: --base {name}: {path} not found")
    return name, Path(path)


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    args.bases = dict(parse_base(text) for text in args.base)  # checked before any training
    if args.bases and args.version.split(".")[0] != "1":
        raise SystemExit("error: --base is for 1.x releases; since 2.0 models train from scratch")
    released = [release_one(name, args) for name in (args.only or sorted(RECIPES))]
    print("released: " + ", ".join(str(p) for p in released))
    return released


if __name__ == "__main__":
    main()
