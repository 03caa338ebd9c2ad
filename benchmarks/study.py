"""The CNN-vs-RCNN study: one table of size, cost, speed and accuracy per trained model.

    python -m benchmarks.study --run "seed CNN=runs/seed/best.pt" --run "RCNN=runs/rcnn/best.pt"

For every checkpoint: parameters and multiply-adds per image (emnist/models/stats.py), training
time and hardware (from the checkpoint), validation top-1 (what selected it), bymerge test top-1
and top-3 (the `metrics.json` that `python -m training.evaluate CHECKPOINT` wrote beside it; run
that first), digits accuracy and in-process latency at batch 1 and 64, measured here side by
side: every round times every model once, and the medians over rounds are reported.

Digits: the 47-class model restricted to its ten digit outputs, on the mnist-split test set
minus the images whose pixels equal an image of the emnist47 training pool (the pool was not
built to exclude them), so no model is scored on an image it was trained on.

Also the validation top-1 of every ensemble (mean log-probabilities) of two or more of the
models: whether combining them would pay. Writes docs/study.json, docs/study.md (the tables),
docs/study_learning_curves.png and docs/study_confusion_pairs.png.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from emnist.checkpoint import load_checkpoint, model_from_checkpoint
from emnist.files import atomic_write, atomic_write_json
from emnist.inference import images_to_tensor, predict_logits
from emnist.models.stats import latency_ms, multiply_adds, parameter_count
from training.cli import HelpFormatter
from training.plots import save_figure
from training.protocol import PROJECT_ROOT, load_protocol, pixel_digests

DIGITS = [str(d) for d in range(10)]
# Characters that bymerge's writers draw alike: the pairs that dominate every model's errors.
LOOK_ALIKES = ("0O", "1IL", "fF", "5S", "9gq", "2Z")


def look_alike_figures(confusion_file: Path) -> dict[str, float]:
    """Top-1 when a look-alike answer counts as right, and the share of errors they make up."""
    saved = json.loads(confusion_file.read_text())
    matrix = np.array(saved["matrix"])
    group = {name: i for i, name in enumerate(saved["class_names"])}
    for k, chars in enumerate(LOOK_ALIKES):
        for char in chars:
            if char in group:
                group[char] = -1 - k
    groups = np.array([group[name] for name in saved["class_names"]])
    same_group = groups[:, None] == groups[None, :]
    merged_right = matrix[same_group].sum()
    errors = matrix.sum() - np.trace(matrix)
    return {
        "look_alike_merged_top1": float(merged_right / matrix.sum()),
        "look_alike_error_share": float((merged_right - np.trace(matrix)) / max(errors, 1)),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--run", action="append", required=True, help="LABEL=CHECKPOINT, repeatable")
    p.add_argument("--rounds", type=int, default=7, help="latency rounds (medians reported)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs", help="output folder")
    return p.parse_args(argv)


def clean_digits_test() -> tuple[np.ndarray, np.ndarray, int]:
    """mnist-split test images not in the emnist47 training pool, their labels, how many left."""
    digits = load_protocol("digits")
    pool = load_protocol("emnist47")
    seen = set(pixel_digests(np.concatenate([pool.train_images, pool.val_images])))
    keep = np.array([d not in seen for d in pixel_digests(digits.test_images)])
    removed = int((~keep).sum())
    return digits.test_images[keep], digits.test_labels[keep], removed


def digits_accuracy(model: torch.nn.Module, class_names: list[str], images, labels) -> float:
    logits = predict_logits(model, images_to_tensor(images, torch.device("cpu")), batch_size=1024)
    columns = [class_names.index(d) for d in DIGITS]
    predicted = logits[:, columns].argmax(1).numpy()
    return float((predicted == labels).mean())


def describe(label: str, path: Path) -> tuple[dict, torch.nn.Module]:
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt)
    metrics_file = path.parent / "eval-emnist47-test" / "metrics.json"
    if not metrics_file.exists():
        raise SystemExit(f"no test figures for {path}: run python -m training.evaluate {path}")
    tested = json.loads(metrics_file.read_text())
    meta = ckpt.get("metrics", {})
    row = {
        "label": label,
        "checkpoint": str(path),
        "arch": ckpt["arch"],
        "model_args": {k: v for k, v in ckpt["model_args"].items() if k != "num_classes"},
        "parameters": parameter_count(model),
        "multiply_adds": multiply_adds(model),
        "epochs_run": len(ckpt.get("history") or []),
        "selected_epoch": meta.get("epoch"),
        "train_seconds": meta.get("train_seconds"),
        "hardware": meta.get("hardware"),
        "train_config": ckpt.get("train_config"),
        "val_top1": meta.get("val_acc"),
        "test_images": tested["images"],
        "test_top1": tested["top1"],
        "test_top3": tested["top3"],
        "most_confused": tested["most_confused"],
        **look_alike_figures(metrics_file.parent / "confusion.json"),
        "history": ckpt.get("history") or [],
        "class_names": ckpt["class_names"],
    }
    return row, model


def ensemble_validation(rows: list[dict], models: list[torch.nn.Module]) -> list[dict]:
    """Validation top-1 of every ensemble of 2 or more models (mean of log-probabilities)."""
    bundle = load_protocol("emnist47")
    inputs = images_to_tensor(bundle.val_images, torch.device("cpu"))
    labels = torch.from_numpy(bundle.val_labels).long()
    log_probs = [predict_logits(m, inputs, batch_size=1024).log_softmax(1) for m in models]
    ensembles = []
    for size in range(2, len(models) + 1):
        for members in itertools.combinations(range(len(models)), size):
            mean = sum(log_probs[i] for i in members) / size
            top1 = (mean.argmax(1) == labels).float().mean().item()
            ensembles.append({"members": [rows[i]["label"] for i in members], "val_top1": top1})
    return ensembles


def measure_latency(models: list[torch.nn.Module], rounds: int) -> list[dict]:
    """Per model, the median over rounds of each round's median, at batch 1 and 64."""
    samples: list[dict[int, list[float]]] = [{1: [], 64: []} for _ in models]
    for _ in range(rounds):
        for i, model in enumerate(models):
            for batch in (1, 64):
                samples[i][batch].append(latency_ms(model, batch, repeats=20)["median_ms"])
    return [
        {f"batch{b}_ms": statistics.median(s[b]) for b in (1, 64)}
        | {"batch64_images_per_second": 64_000 / statistics.median(s[64])}
        for s in samples
    ]


def plot_curves(rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for row in rows:
        history = row["history"]
        ax.plot(
            [h["epoch"] for h in history],
            [100 * h["val_acc"] for h in history],
            label=f"{row['label']} (best {100 * row['val_top1']:.2f}%)",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_ylim(85, 92)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Validation accuracy per epoch (emnist47, 5,329 validation images)")
    save_figure(fig, path)


def plot_confusion_pairs(rows: list[dict], path: Path, top: int = 8) -> None:
    """The pairs that dominate the errors: counts of the first model's top pairs, per model."""
    pairs = [(p["true"], p["predicted"]) for p in rows[0]["most_confused"][:top]]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        counts = {(p["true"], p["predicted"]): p["count"] for p in row["most_confused"]}
        ax.bar(
            [k + i * width for k in range(len(pairs))],
            [counts.get(pair, 0) for pair in pairs],
            width,
            label=row["label"],
        )
    ax.set_xticks(
        [k + 0.4 - width / 2 for k in range(len(pairs))], [f"{t} -> {p}" for t, p in pairs]
    )
    ax.set_ylabel(f"test images (of {rows[0]['test_images']:,})")
    ax.set_title("Most confused pairs on the bymerge test set (true -> predicted)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def markdown(rows: list[dict], removed: int, digits_images: int, threads: int) -> str:
    lines = [
        "| model | arch | params | MACs/image | epochs (selected) | training | val top-1 "
        "| bymerge top-1 | top-3 | look-alikes merged | digits | batch 1 | batch 64 |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        minutes = "?" if r["train_seconds"] is None else f"{r['train_seconds'] / 60:.1f} min"
        lines.append(
            f"| {r['label']} | `{r['arch']}` {r['model_args'] or ''} | {r['parameters']:,} "
            f"| {r['multiply_adds'] / 1e6:.1f} M | {r['epochs_run']} ({r['selected_epoch']}) "
            f"| {minutes}, {r['hardware']} | {100 * r['val_top1']:.2f}% "
            f"| {100 * r['test_top1']:.2f}% | {100 * r['test_top3']:.2f}% "
            f"| {100 * r['look_alike_merged_top1']:.2f}% "
            f"({100 * r['look_alike_error_share']:.0f}%) "
            f"| {100 * r['digits']:.2f}% | {r['batch1_ms']:.2f} ms "
            f"| {r['batch64_ms']:.1f} ms ({r['batch64_images_per_second']:,.0f}/s) |"
        )
    lines += [
        "",
        f"bymerge: the complete official test set ({rows[0]['test_images']:,} images). digits: "
        f"the ten digit outputs on the mnist-split test set minus {removed:,} images that are "
        f"also in the emnist47 training pool ({digits_images:,} images). Latency: in-process "
        f"forward pass, CPU, {threads} torch threads, channels-last, median over rounds. "
        f"Look-alikes merged: top-1 when an answer in the same group of "
        f"{' '.join(LOOK_ALIKES)} counts as right (in brackets: the share of all errors those "
        f"groups make up).",
        "",
        "Most confused pairs on bymerge (true -> predicted: count):",
        "",
    ]
    for r in rows:
        pairs = ", ".join(
            f"{p['true']}->{p['predicted']}: {p['count']}" for p in r["most_confused"][:8]
        )
        lines.append(f"- {r['label']}: {pairs}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    runs = [spec.split("=", 1) for spec in args.run]
    described = [describe(label, Path(path)) for label, path in runs]
    rows = [row for row, _ in described]
    models = [model for _, model in described]
    images, labels, removed = clean_digits_test()
    for row, model in zip(rows, models, strict=True):
        row["digits"] = digits_accuracy(model, row["class_names"], images, labels)
        print(f"{row['label']}: digits {100 * row['digits']:.2f}%")
    ensembles = ensemble_validation(rows, models)
    for row, timing in zip(rows, measure_latency(models, args.rounds), strict=True):
        row.update(timing)
    plot_curves(rows, args.out / "study_learning_curves.png")
    plot_confusion_pairs(rows, args.out / "study_confusion_pairs.png")
    for row in rows:
        del row["class_names"]
    atomic_write_json(
        args.out / "study.json", {"threads": threads, "runs": rows, "ensembles": ensembles}
    )
    table = markdown(rows, removed, len(labels), threads)
    best = max(ensembles, key=lambda e: e["val_top1"], default=None)
    if best is not None:
        worst = min(e["val_top1"] for e in ensembles)
        table += (
            f"\nEnsembles (mean log-probabilities) of 2 to {len(models)} of these models, "
            f"validation top-1: {100 * worst:.2f}% to {100 * best['val_top1']:.2f}% "
            f"(best: {' + '.join(best['members'])}); best single model: "
            f"{100 * max(r['val_top1'] for r in rows):.2f}%.\n"
        )
    atomic_write(args.out / "study.md", table.encode())
    print(table)
    return rows


if __name__ == "__main__":
    main()
