"""The model card in every archive: what the model is, what it was trained on, how well it does.

`serving.archive` writes it into the archive as `model-card.json` and `MODEL_CARD.md`, built
from the self-describing checkpoint and, when given, the `metrics.json` that
`python -m training.evaluate` wrote for that checkpoint's test set. Read it back with
`unzip -p model_store/emnist-cnn-1.0.mar MODEL_CARD.md`.
"""

from __future__ import annotations

from typing import Any

from emnist.checkpoint import model_from_checkpoint
from emnist.models.stats import multiply_adds, parameter_count

PROTOCOLS = {
    "emnist47": (
        "EMNIST-47 (../shared/emnist/README.md): trained on the byclass test set relabelled to the"
        " 47 bymerge classes plus the balanced train slice, minus every image equal to a bymerge"
        " test image and exact duplicates; a seeded 5% of that pool for validation and checkpoint"
        " selection; tested on the complete official bymerge test set (116,323 images)."
    ),
    "digits": (
        "Digits (../shared/emnist/README.md): every digit image available minus those equal to an"
        " mnist-split test image; a seeded 5% for validation; tested on the complete official"
        " mnist-split test set (10,000 images)."
    ),
}


def build_card(
    ckpt: dict, name: str, version: str, test_metrics: dict[str, Any] | None = None
) -> dict[str, Any]:
    model = model_from_checkpoint(ckpt)
    config = ckpt.get("train_config") or {}
    metrics = ckpt.get("metrics") or {}
    data = ckpt.get("data") or {}
    source = config.get("protocol") or config.get("split")
    card: dict[str, Any] = {
        "name": name,
        "version": version,
        "arch": ckpt["arch"],
        "model_args": ckpt["model_args"],
        "classes": list(ckpt["class_names"]),
        "parameters": parameter_count(model),
        "multiply_adds_per_image": multiply_adds(model),
        "preprocessing_version": ckpt.get("preprocessing_version"),
        "data": {
            "source": source,
            "protocol": PROTOCOLS.get(source, f"official EMNIST split {source!r}"),
            "counts": data.get("counts"),
            "sources": data.get("sources"),
            "files": [
                {"file": f.get("file"), "sha256": f.get("sha256")} for f in data.get("files", [])
            ],
            "handwriting_fonts": data.get("handwriting_fonts"),
            "feedback": data.get("feedback"),
        },
        "validation": {
            "top1": metrics.get("val_acc"),
            "top3": metrics.get("val_top3"),
            "selected_epoch": metrics.get("epoch"),
        },
        "test": None,
        "training": {
            "config": config,
            "epochs_run": len(ckpt.get("history") or []),
            "seconds": metrics.get("train_seconds"),
            "hardware": metrics.get("hardware"),
            "torch": ckpt.get("torch_version"),
            "fine_tuned_from": _base_summary(ckpt.get("base")),
            "bn_recalibration": ckpt.get("bn_recalibration"),
        },
    }
    if test_metrics is not None:
        card["test"] = {
            "data": test_metrics["data"],
            "images": test_metrics["images"],
            "top1": test_metrics["top1"],
            "top3": test_metrics["top3"],
            "most_confused": test_metrics.get("most_confused", [])[:10],
        }
    return card


def _epochs(count: int | None) -> str:
    return f"{count} epoch" if count == 1 else f"{count} epochs"


def _base_summary(base: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a fine-tuned checkpoint started from (train.py --init-from), nested bases included."""
    if not base:
        return None
    config, metrics = base.get("train_config") or {}, base.get("metrics") or {}
    return {
        "file": base.get("file"),
        "sha256": base.get("sha256"),
        "config": config,
        "val_top1": metrics.get("val_acc"),
        "seconds": metrics.get("train_seconds"),
        "hardware": metrics.get("hardware"),
        "fine_tuned_from": _base_summary(base.get("base")),
    }


def check_test_metrics(test_metrics: dict[str, Any], ckpt: dict) -> None:
    """Refuse figures that belong to another model or to a subset other than the test set."""
    if test_metrics.get("subset") != "test":
        raise ValueError(f"the metrics are for the {test_metrics.get('subset')!r} subset, not test")
    if test_metrics.get("arch") != ckpt["arch"] or test_metrics.get("model_args") != ckpt.get(
        "model_args"
    ):
        raise ValueError("the metrics were measured on a different architecture")
    config = ckpt.get("train_config") or {}
    if test_metrics.get("data") not in (config.get("protocol"), config.get("split")):
        raise ValueError(f"the metrics are for {test_metrics.get('data')!r}, not the training data")


def _pct(value: float | None) -> str:
    return "not measured" if value is None else f"{100 * value:.2f}%"


def card_markdown(card: dict[str, Any]) -> str:
    training = card["training"]
    config = training["config"]
    test = card["test"]
    lines = [
        f"# {card['name']} {card['version']}",
        "",
        f"- Architecture: `{card['arch']}` {card['model_args']}",
        f"- Parameters: {card['parameters']:,}; multiply-adds per 28x28 image: "
        f"{card['multiply_adds_per_image'] / 1e6:.1f} M",
        f"- Classes: {len(card['classes'])} ({''.join(card['classes'])})",
        f"- Preprocessing version: {card['preprocessing_version']}",
        "",
        "## Data and protocol",
        "",
        card["data"]["protocol"],
        "",
        f"Image counts: {card['data']['counts']}.",
        "",
        "## Accuracy",
        "",
        f"- Validation (checkpoint selection): top-1 {_pct(card['validation']['top1'])}, "
        f"top-3 {_pct(card['validation']['top3'])} at epoch {card['validation']['selected_epoch']}",
    ]
    if test:
        lines.append(
            f"- Test ({test['data']}, {test['images']:,} images): top-1 {_pct(test['top1'])}, "
            f"top-3 {_pct(test['top3'])}"
        )
        pairs = ", ".join(
            f"{p['true']}->{p['predicted']} ({p['count']})" for p in test["most_confused"][:5]
        )
        lines.append(f"- Most confused (true->predicted): {pairs}")
    else:
        lines.append("- Test: not measured when this archive was built")
    seconds = training["seconds"]
    lines += [
        "",
        "## Training",
        "",
        f"- Hardware: {training['hardware']}; time: "
        f"{'unknown' if seconds is None else f'{seconds / 60:.1f} min'}; "
        f"epochs run: {training['epochs_run']}; torch {training['torch']}",
        f"- Optimiser {config.get('optimizer')} lr {config.get('lr')} weight decay "
        f"{config.get('weight_decay')}, {config.get('schedule')} schedule, batch "
        f"{config.get('batch_size')}, label smoothing {config.get('label_smoothing')}, "
        f"augmentation {config.get('augment')}, EMA {config.get('ema')}, seed {config.get('seed')}"
        + (f", font glyphs {config['font_glyphs']:.0%}" if config.get("font_glyphs") else "")
        + f", precision {config.get('precision') or 'not recorded'}",
    ]
    fonts = card["data"].get("handwriting_fonts")
    if fonts:
        files = ", ".join(
            f"{f['file'].rsplit('/', 1)[-1]} ({f['sha256'][:12]})" for f in fonts["files"]
        )
        lines.append(
            f"- Handwriting fonts {fonts['fraction']:.0%} of each epoch, families "
            f"{', '.join(fonts['families'])} (Debian packages): {files}"
        )
    corrections = card["data"].get("feedback")
    if corrections:
        lines.append(
            f"- People's corrections {corrections['fraction']:.0%} of each epoch: "
            f"{corrections['images']} from {len(corrections['writers'])} writers (feedback "
            f"database snapshot {corrections['database_sha256'][:12]}; held-out writers kept out)"
        )
    recalibrated = training.get("bn_recalibration")
    if recalibrated:
        lines.append(
            f"- Batch-norm statistics recomputed on {recalibrated['images']:,} clean training "
            f"images (`python -m training.recalibrate`): validation top-1 "
            f"{_pct(recalibrated['val_before']['acc'])} before, the figure above after"
        )
    base = training.get("fine_tuned_from")
    while base:
        seconds = base["seconds"]
        lines.append(
            f"- Fine-tuned from `{base['file']}` (sha256 {(base['sha256'] or '')[:12]}): "
            f"{_epochs(base['config'].get('epochs'))} of {base['config'].get('arch')} on "
            f"{base['hardware']}, {'unknown' if seconds is None else f'{seconds / 60:.1f} min'}, "
            f"validation top-1 {_pct(base['val_top1'])}"
        )
        base = base["fine_tuned_from"]
    return "\n".join(lines) + "\n"
