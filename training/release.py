"""Reproduce the shipped models from the data: train, evaluate, archive, check the archive.

    python -m training.release --version 1.1            # every default model (make release)
    python -m training.release --version 1.1 --only emnist-cnn --epochs 1   # a quick try

For each recipe below: `training.train` into runs/release-<version>/<name>/ (validation picks the
checkpoint; the test set is not looked at), `training.evaluate` on the complete test set,
`handlers.archive` with those figures in the model card, then `training.evaluate` of the new
archive through its own handler, which must agree with the checkpoint's figures. The archive
lands in model_store/ (never overwriting a version); make it the default with
`make set-default` on a running server and in config.properties' `models=`.

Runs on a GPU when there is one (minutes on an H100, see README "Released models") and on the
CPU otherwise (hours: pass --epochs to shorten).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from handlers import archive
from training import evaluate, train
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
    print(f"== {name} {args.version}: train {' '.join(recipe)} --seed {args.seed}", flush=True)
    train.main(
        [*recipe, *args.train_arg, "--seed", str(args.seed), "--out", str(run), "--no-progress"]
    )
    checkpoint = run / "best.pt"
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


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    released = [release_one(name, args) for name in (args.only or sorted(RECIPES))]
    print("released: " + ", ".join(str(p) for p in released))
    return released


if __name__ == "__main__":
    main()
