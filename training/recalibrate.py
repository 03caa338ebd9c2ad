"""Recompute a checkpoint's batch-norm statistics on clean (unaugmented) training images.

    python -m training.recalibrate runs/x/best.pt --out runs/x/best-bn.pt

Training keeps batch norm's running mean and variance from augmented batches (rotated,
sheared, rescaled; typeset glyphs when `--font-glyphs` is on), and the weight average carries
them over; served images are not augmented. Measured on the emnist47 validation set
(docs/results.md): an RCNN with per-step batch norm reads 90.04% with its training statistics
and 90.26% with statistics of clean training images; a CNN fine-tuned with glyphs 89.79% and
90.62%. Only training images are used and nothing is learned, so validation can still judge
the result: both figures are printed and kept in the new checkpoint (`bn_recalibration`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from emnist.checkpoint import atomic_save, load_checkpoint, model_from_checkpoint
from emnist.inference import accuracy_metrics, images_to_tensor, predict_logits, select_device
from training.cli import HelpFormatter
from training.finetune import file_sha256, project_relative
from training.protocol import load_data


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, inputs: torch.Tensor, batch_size: int = 512) -> int:
    """Set every batch-norm layer's running statistics to the average over `inputs`' batches.

    Returns the number of batch-norm layers. Other layers (dropout included) run in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.eval()
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over all batches, not an exponential one
        m.train()
    try:
        for start in range(0, len(inputs), batch_size):
            model(inputs[start : start + batch_size])
    finally:
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum
        model.eval()
    return len(norms)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("checkpoint", type=Path, help="a checkpoint from training (best.pt)")
    p.add_argument("--out", type=Path, required=True, help="where the new checkpoint goes")
    p.add_argument(
        "--images", type=int, default=None, help="the first N training images (default: all)"
    )
    p.add_argument("--data-root", default=None, help="for checkpoints of an official split")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.out.resolve() == args.checkpoint.resolve():
        raise SystemExit("error: --out must differ from the checkpoint (it is kept as it was)")
    ckpt = load_checkpoint(args.checkpoint)
    config = ckpt.get("train_config") or {}
    bundle = load_data(
        protocol=config.get("protocol"),
        split=config.get("split"),
        data_root=args.data_root or config.get("data_root"),
    )
    if list(bundle.class_names) != list(ckpt["class_names"]):
        raise SystemExit(f"error: {args.checkpoint} was trained on other classes than this data's")
    device = select_device(args.device)
    train_x = images_to_tensor(bundle.train_images[: args.images], device)
    val_x = images_to_tensor(bundle.val_images, device)
    val_y = torch.from_numpy(bundle.val_labels).long().to(device)
    model = model_from_checkpoint(ckpt, device)
    before = accuracy_metrics(predict_logits(model, val_x), val_y)
    layers = recalibrate_batch_norm(model, train_x)
    if layers == 0:
        raise SystemExit(f"error: {ckpt['arch']} {ckpt['model_args']} has no batch norm")
    after = accuracy_metrics(predict_logits(model, val_x), val_y)
    print(
        f"{layers} batch-norm layers on {len(train_x):,} clean training images: validation "
        f"top-1 {before['acc']:.2%} -> {after['acc']:.2%}"
    )
    new = dict(ckpt)
    new["state_dict"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    new["metrics"] = {
        **(ckpt.get("metrics") or {}),
        "val_acc": after["acc"],
        "val_top3": after["top3"],
        "val_loss": after["loss"],
    }
    new["bn_recalibration"] = {
        "images": len(train_x),
        "input": project_relative(args.checkpoint),  # it lands in model-card.json
        "input_sha256": file_sha256(args.checkpoint),
        "val_before": {"acc": before["acc"], "top3": before["top3"], "loss": before["loss"]},
    }
    atomic_save(new, args.out)
    print(f"-> {args.out}")
    return {"before": before, "after": after, "out": str(args.out)}


if __name__ == "__main__":
    main()
