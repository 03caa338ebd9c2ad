"""`make learn MODEL=emnist-cnn`: a candidate version from what people corrected.

    python -m release.learn --model emnist-cnn [--epochs 1] [--limit-train N]

1. exports the feedback store (`training.feedback export`: split by writer, a snapshot's hash);
2. fine-tunes the current default (config.properties `models=` and the ledger) on the training
   part of the corrections mixed into the EMNIST training pool, so that it does not forget
   (bf16 where the hardware has it, or the GPU);
3. recomputes batch-norm statistics on clean training images (`training.recalibrate`);
4. builds `model_store/<model>-<next version>.mar` and checks it; its model card names the
   base version and the feedback snapshot (hash, counts, writers);
5. appends a `learn` event to the ledger (release/ledger.py).

The candidate is not served as the default: `make promote` does that, through the gate.
Candidates are made from user data: they stay out of git, as the corrections do.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from torch import nn

from emnist.checkpoint import load_checkpoint, model_from_checkpoint
from mar import archive as mar_archive
from release import ledger
from release.recipe import checkpoint_from_archive
from serving import archive, torchserve
from training import feedback, recalibrate, train
from training.cli import HelpFormatter
from training.protocol import PROJECT_ROOT

DEFAULT_DB = feedback.DEFAULT_DB


def next_version(store: Path, model: str) -> str:
    """One more than the highest version of `model` in the store, in its last place."""
    versions = [p.stem.removeprefix(f"{model}-") for p in store.glob(f"{model}-*.mar")]
    if not versions:
        raise SystemExit(f"error: no {model} archive in {store}")
    parts = max(versions, key=torchserve.version_key).split(".")
    parts[-1] = str(int(parts[-1]) + 1)
    return ".".join(parts)


def has_batch_norm(checkpoint: Path) -> bool:
    model = model_from_checkpoint(load_checkpoint(checkpoint))
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m release.learn", description=__doc__, formatter_class=HelpFormatter
    )
    p.add_argument("--model", required=True, help="e.g. emnist-cnn")
    p.add_argument(
        "--db",
        type=Path,
        default=Path(os.environ.get("EMNIST_FEEDBACK_DB") or DEFAULT_DB),
        help="the feedback store (EMNIST_FEEDBACK_DB)",
    )
    p.add_argument("--store", type=Path, default=PROJECT_ROOT / "model_store")
    p.add_argument(
        "--config", type=Path, default=ledger.CONFIG, help="whose defaults to start from"
    )
    p.add_argument("--runs", type=Path, default=PROJECT_ROOT / "runs")
    p.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs")
    p.add_argument("--lr", type=float, default=1e-4, help="fine-tuning learning rate")
    p.add_argument(
        "--feedback-fraction",
        type=float,
        default=0.1,
        help="share of each epoch that is corrections",
    )
    p.add_argument("--heldout-fraction", type=float, default=0.2, help="writers held out")
    p.add_argument("--limit-train", type=int, default=None, help="EMNIST images (small trials)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    base_version = ledger.current_defaults(args.config).get(args.model)
    if base_version is None:
        raise SystemExit(f"error: {args.model} has no default version in config.properties")
    base_archive = args.store / f"{args.model}-{base_version}.mar"
    if not base_archive.exists():
        raise SystemExit(f"error: the default {base_archive} is not in the store")
    candidate = next_version(args.store, args.model)
    run = args.runs / "learn" / f"{args.model}-{candidate}"
    print(f"== {args.model}: learn {candidate} from {base_version} and {args.db}", flush=True)
    manifest = feedback.export(args.db, run / "export", args.heldout_fraction)
    if manifest["parts"]["train"]["images"] == 0:
        raise SystemExit("error: no training corrections yet (the held-out writers' are kept out)")
    base = checkpoint_from_archive(base_archive, run / f"base-{base_archive.stem}.pt")
    ckpt = mar_archive.checkpoint(base_archive)
    config = ckpt.get("train_config") or {}
    recipe = ["--arch", ckpt["arch"], "--protocol", config.get("protocol") or "emnist47"]
    recipe += ["--epochs", str(args.epochs), "--lr", str(args.lr), "--warmup-epochs", "0"]
    recipe += [
        "--feedback",
        str(run / "export"),
        "--feedback-fraction",
        str(args.feedback_fraction),
    ]
    recipe += ["--seed", str(args.seed), "--no-progress", "--init-from", str(base)]
    if args.limit_train:
        recipe += ["--limit-train", str(args.limit_train)]
    train.main([*recipe, "--out", str(run / "fine-tune")])
    tuned = run / "fine-tune" / "best.pt"
    if has_batch_norm(tuned):
        limit = ["--images", str(args.limit_train)] if args.limit_train else []
        recalibrate.main([str(tuned), "--out", str(run / "best.pt"), *limit])
    else:
        shutil.copyfile(tuned, run / "best.pt")
    mar = archive.main(
        [
            str(run / "best.pt"),
            "--name",
            args.model,
            "--version",
            candidate,
            "--store",
            str(args.store),
        ]
    )
    snapshot = {
        "database_sha256": manifest["database_sha256"],
        "train_images": manifest["parts"]["train"]["images"],
        "heldout_images": manifest["parts"]["heldout"]["images"],
        "train_writers": manifest["parts"]["train"]["writers"],
        "heldout_writers": manifest["parts"]["heldout"]["writers"],
    }
    ledger.append(
        "learn",
        args.model,
        base=base_version,
        candidate=candidate,
        archive=mar.name,
        export=str(run / "export"),
        feedback=snapshot,
        settings={
            k: getattr(args, k) for k in ("epochs", "lr", "feedback_fraction", "limit_train")
        },
    )
    print(f"candidate {mar}: make promote MODEL={args.model} VERSION={candidate}")
    print("note: it is made from people's corrections: keep it (and a config.properties that")
    print("      names it as a default) out of git, as data/feedback/ is")
    return mar


if __name__ == "__main__":
    main()
