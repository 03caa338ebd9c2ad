"""The study with three seeds: the 2.0 recipe of the CNN and of RCNN-96 (batch norm), seeds 0-2.

    python -m benchmarks.seeds                  # train what is missing (resumable), then report
    python -m benchmarks.seeds --report-only    # the table from the runs that have finished

Each run is exactly `release/recipe.py`'s RECIPES entry with another `--seed`, in
runs/seeds-<version>/<model>/seed<N>/: `train/` (best.pt, last.pt; an interrupted run continues
with `--resume` when this is run again), `best.pt` (clean batch-norm statistics, as released),
`eval-test/` (the complete bymerge test set, looked at after training) and `drawing-val.json`
(the held-out handwriting fonts). Seed 0 is the recipe's own seed: the released 2.0 pair.

Writes docs/seeds.json and docs/seeds.md: every run, and per model the mean, the sample standard
deviation and the range of each figure, the CNN-RCNN difference of mean bymerge top-1 with
its significance (`benchmarks/significance.py`), and each model's seeds averaged (on
validation: whether they would pay).
On 2 CPU cores a CNN run takes about an hour, an RCNN run about the same.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

import torch

from benchmarks import significance
from emnist.checkpoint import load_checkpoint, model_from_checkpoint
from emnist.files import atomic_write, atomic_write_json
from emnist.inference import images_to_tensor, predict_logits
from release.recipe import RECIPES
from training import drawing_validation, evaluate, recalibrate, train, train_options
from training.cli import HelpFormatter
from training.protocol import PROJECT_ROOT, load_protocol

MODELS = ("emnist-cnn", "emnist-rcnn")
DERIVED = ("best.pt", "eval-test", "drawing-val.json")  # everything made from train/best.pt
FIGURES = {
    "val_top1": "validation top-1",
    "test_top1": "bymerge top-1",
    "test_top3": "bymerge top-3",
    "drawing_val_top1": "drawing validation",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--version", default="2.0", help="the release whose recipe is repeated")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    p.add_argument("--only", choices=MODELS, action="append", help="one model only")
    p.add_argument("--report-only", action="store_true", help="train nothing; report what ended")
    p.add_argument(
        "--train-arg", action="append", default=[], help="extra training option (trial runs)"
    )
    p.add_argument("--eval-limit", type=int, default=None, help="first N test images (trials)")
    p.add_argument("--runs", type=Path, default=PROJECT_ROOT / "runs", help="where runs go")
    p.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs", help="report folder")
    return p.parse_args(argv)


def finished(train_dir: Path, epochs: int) -> bool:
    last = train_dir / "last.pt"
    return last.exists() and len(load_checkpoint(last).get("history") or []) >= epochs


def remove_derived(run: Path) -> None:
    for derived in (run / name for name in DERIVED):
        if derived.is_dir():
            shutil.rmtree(derived)
        else:
            derived.unlink(missing_ok=True)


def complete_run(name: str, seed: int, run: Path, args: argparse.Namespace) -> None:
    """Train (or continue), recalibrate, test and score the drawings: whatever is missing."""
    recipe = [*RECIPES[name], *args.train_arg]
    if not finished(run / "train", train_options.parse_args(recipe).epochs):
        remove_derived(run)  # from an earlier, shorter run: made again below
        print(f"== {name} seed {seed}: train {' '.join(recipe)}", flush=True)
        train.main([*recipe, "--seed", str(seed), "--no-progress", "--resume",
                    "--out", str(run / "train")])  # fmt: skip
    if not (run / "best.pt").exists():
        recalibrate.main([str(run / "train" / "best.pt"), "--out", str(run / "best.pt")])
    if not (run / "eval-test" / "metrics.json").exists():
        limit = [] if args.eval_limit is None else ["--limit", str(args.eval_limit)]
        evaluate.main([str(run / "best.pt"), *limit, "--out", str(run / "eval-test")])
    if not (run / "drawing-val.json").exists():
        top1 = drawing_validation.main([str(run / "best.pt")])[str(run / "best.pt")]
        atomic_write_json(run / "drawing-val.json", {"top1": top1})


def run_row(name: str, seed: int, run: Path) -> dict | None:
    """One finished run's figures, or None while any of them is missing."""
    files = [run / "best.pt", run / "eval-test" / "metrics.json", run / "drawing-val.json"]
    if not all(f.exists() for f in files):
        return None
    meta = load_checkpoint(run / "best.pt").get("metrics") or {}
    tested = json.loads(files[1].read_text())
    return {
        "model": name,
        "seed": seed,
        "run": str(run.relative_to(PROJECT_ROOT) if run.is_relative_to(PROJECT_ROOT) else run),
        "selected_epoch": meta.get("epoch"),
        "train_seconds": meta.get("train_seconds"),
        "parameters": meta.get("parameters"),
        "val_top1": meta.get("val_acc"),
        "test_images": tested["images"],
        "test_top1": tested["top1"],
        "test_top3": tested["top3"],
        "drawing_val_top1": json.loads(files[2].read_text())["top1"],
    }


def seed_ensembles(rows: list[dict]) -> list[dict]:
    """Each model's finished seeds averaged (mean log-probabilities) on validation and on the
    drawing validation: whether the seeds read better together than the best of them."""
    cpu = torch.device("cpu")
    bundle = load_protocol("emnist47")
    val_x = images_to_tensor(bundle.val_images, cpu)
    val_y = torch.from_numpy(bundle.val_labels).long()
    ensembles = []
    for name in MODELS:
        members = [r for r in rows if r["model"] == name]
        if len(members) < 2:
            continue
        ckpts = [load_checkpoint(PROJECT_ROOT / r["run"] / "best.pt") for r in members]
        images, labels = drawing_validation.drawing_set(list(ckpts[0]["class_names"]))
        drawings = images_to_tensor(images, cpu)
        val_sum, drawing_sum = 0, 0
        for ckpt in ckpts:
            model = model_from_checkpoint(ckpt, cpu)
            val_sum = val_sum + predict_logits(model, val_x, batch_size=1024).log_softmax(1)
            drawing_sum = drawing_sum + predict_logits(
                model, drawings, batch_size=1024
            ).log_softmax(1)
        ensembles.append(
            {
                "model": name,
                "seeds": [r["seed"] for r in members],
                "val_top1": (val_sum.argmax(1) == val_y).float().mean().item(),
                "drawing_val_top1": float((drawing_sum.argmax(1).numpy() == labels).mean()),
            }
        )
    return ensembles


def spread(values: list[float]) -> dict:
    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "min": min(values),
        "max": max(values),
    }


def summarise(rows: list[dict]) -> dict:
    by_model = {
        name: {key: spread([r[key] for r in rows if r["model"] == name]) for key in FIGURES}
        for name in MODELS
        if any(r["model"] == name for r in rows)
    }
    summary: dict = {"per_model": by_model}
    if len(by_model) == 2:
        cnn, rcnn = ([r["test_top1"] for r in rows if r["model"] == name] for name in MODELS)
        summary["cnn_minus_rcnn_test_top1"] = statistics.fmean(cnn) - statistics.fmean(rcnn)
        if len(cnn) > 1 and len(rcnn) > 1:
            summary["welch"] = significance.welch(cnn, rcnn)
            summary["permutation"] = significance.permutation_p(cnn, rcnn)
    return summary


def pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def markdown(
    rows: list[dict], summary: dict, version: str, missing: list[str], ensembles: list[dict]
) -> str:
    lines = [
        f"# The study with three seeds: the {version} recipe, seeds "
        + ", ".join(str(s) for s in sorted({r["seed"] for r in rows})),
        "",
        "Written by `python -m benchmarks.seeds` (`make seeds`). Every run is the release "
        "recipe (`release/recipe.py`) with another seed, batch-norm statistics recomputed on "
        "clean training images, its checkpoint selected on validation only; bymerge: the "
        "complete official test set; drawing validation: the held-out handwriting fonts; "
        "training: wall time from the checkpoint, pauses included.",
        "",
        "| model | seed | epoch selected | training | val top-1 | bymerge top-1 | top-3 "
        "| drawing validation |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        minutes = "-" if r["train_seconds"] is None else f"{r['train_seconds'] / 60:.0f} min"
        lines.append(
            f"| {r['model']} | {r['seed']} | {r['selected_epoch']} | {minutes} "
            f"| {pct(r['val_top1'])} | {pct(r['test_top1'])} | {pct(r['test_top3'])} "
            f"| {pct(r['drawing_val_top1'], 1)} |"
        )
    lines += ["", "| model | figure | runs | mean | sd (points) | range |"]
    lines.append("|---|---|---:|---:|---:|---|")
    for name, figures in summary["per_model"].items():
        for key, s in figures.items():
            sd = "-" if s["sd"] is None else f"{100 * s['sd']:.2f}"
            lines.append(
                f"| {name} | {FIGURES[key]} | {s['n']} | {pct(s['mean'])} | {sd} "
                f"| {pct(s['min'])}-{pct(s['max'])} |"
            )
    for e in ensembles:
        lines += [
            "",
            f"{e['model']} seeds {', '.join(map(str, e['seeds']))} averaged (mean "
            f"log-probabilities): validation top-1 {pct(e['val_top1'])}, drawing validation "
            f"{pct(e['drawing_val_top1'], 1)}.",
        ]
    if missing:
        lines += ["", "Not finished yet (`make seeds` continues them): " + ", ".join(missing) + "."]
    if "cnn_minus_rcnn_test_top1" in summary:
        diff = 100 * summary["cnn_minus_rcnn_test_top1"]
        lines += ["", f"CNN minus RCNN, mean bymerge top-1: {diff:+.2f} points"]
        if "welch" in summary:
            w, perm = summary["welch"], summary["permutation"]
            lines[-1] += (
                f" (standard error {100 * w['se']:.2f}; Welch's t = {w['t']:.1f} with "
                f"{w['df']:.1f} degrees of freedom, two-sided p = {w['p']:.3f}; exact permutation "
                f"test over all {perm['splits']} splits of the runs: p = {perm['p']:.2f}, the "
                f"smallest it can be {perm['smallest_possible_p']:.2f})."
            )
        else:
            lines[-1] += "."
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    root = args.runs / f"seeds-{args.version}"
    rows, missing = [], []
    for name in args.only or MODELS:
        for seed in args.seeds:
            run = root / name / f"seed{seed}"
            if not args.report_only:
                complete_run(name, seed, run, args)
            row = run_row(name, seed, run)
            if row is None:
                print(f"{name} seed {seed}: not finished ({run})")
                missing.append(f"{name} seed {seed}")
            else:
                rows.append(row)
    if not rows:
        raise SystemExit(f"error: no finished run under {root}")
    summary = summarise(rows)
    ensembles = seed_ensembles(rows)
    report = {
        "version": args.version,
        "runs": rows,
        "not_finished": missing,
        "summary": summary,
        "seed_ensembles": ensembles,
    }
    text = markdown(rows, summary, args.version, missing, ensembles)
    atomic_write_json(args.out / "seeds.json", report)
    atomic_write(args.out / "seeds.md", text.encode())
    print(text)
    return report


if __name__ == "__main__":
    main()
