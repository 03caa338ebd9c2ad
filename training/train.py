"""Train a registered model on an EMNIST protocol or official split.

    python -m training.train --arch rcnn --protocol emnist47 --epochs 30 --out runs/rcnn

Writes `best.pt` (the checkpoint with the best validation accuracy; the test set is never
looked at) and `last.pt` (the same plus optimizer and RNG state, for `--resume`), atomically.
"""

import argparse
import ast
import math
import platform
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from training.augment import PRESETS, augment_batch
from training.checkpoint import atomic_save, load_checkpoint, make_checkpoint, unwrap
from training.cli import HelpFormatter, add_data_arguments
from training.finetune import load_base
from training.font_glyphs import glyph_set, repeats_for
from training.inference import accuracy_metrics, images_to_tensor, predict_logits, select_device
from training.models import build_model, list_models
from training.protocol import load_data
from training.speed import configure_cpu_threads, prepare_for_training


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
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
        "--init-from",
        type=Path,
        default=None,
        metavar="CHECKPOINT",
        help="start from this checkpoint's weights (fine-tuning; its model args are reused)",
    )
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of weights (0 = off)")
    p.add_argument("--seed", type=int, default=0, help="weights, shuffling and augmentation")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
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


def add_font_glyphs(train_x, train_y, class_names: list[str], fraction: float):
    """The training images with typeset characters appended, `fraction` of the total."""
    glyphs, labels = glyph_set(class_names)
    copies = repeats_for(fraction, len(train_x), len(glyphs))
    print(f"font glyphs: {len(glyphs):,} renders x {copies} ({fraction:.0%} of each epoch)")
    glyph_x = images_to_tensor(glyphs, train_x.device).repeat(copies, 1, 1, 1)
    glyph_y = torch.from_numpy(labels).to(train_y.device).repeat(copies)
    return torch.cat([train_x, glyph_x]), torch.cat([train_y, glyph_y])


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


def make_schedule(optimizer, args, steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    total = max(1, args.epochs * steps_per_epoch)
    warmup = min(total - 1, int(args.warmup_epochs * steps_per_epoch))
    if args.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if args.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def ema_with_warmup(decay: float):
    """EMA update whose decay ramps up as (1 + n) / (10 + n): early averages forget the random
    initial weights quickly, so short runs and early epochs get a usable average too."""

    def update(ema_params, current_params, num_averaged):
        n = int(num_averaged)
        d = min(decay, (1 + n) / (10 + n))
        if torch.is_floating_point(ema_params[0]):
            torch._foreach_lerp_(ema_params, current_params, 1 - d)
        else:  # integer buffers such as BatchNorm's num_batches_tracked
            for ema, current in zip(ema_params, current_params, strict=True):
                ema.copy_(current)

    return update


def make_optimizer(model: nn.Module, args) -> torch.optim.Optimizer:
    # No weight decay on biases and norm parameters: decaying them only hurts.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": args.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if args.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=args.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=args.lr)


def train_one_epoch(model, inputs, labels, optimizer, scheduler, *, args, generator, ema=None):
    """One pass over the shuffled training set; returns mean loss and accuracy."""
    model.train()
    augment = PRESETS[args.augment]
    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    amp = inputs.device.type == "cuda"
    order = torch.randperm(len(inputs), generator=generator).to(inputs.device)
    total_loss = correct = seen = 0
    batches = range(0, len(order), args.batch_size)
    bar = tqdm(batches, desc="train", leave=False, disable=args.no_progress or None)
    for start in bar:
        idx = order[start : start + args.batch_size]
        x = augment_batch(inputs[idx], augment, generator)
        y = labels[idx]
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
            loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(unwrap(model))
        total_loss += loss.item() * len(idx)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(idx)
        bar.set_postfix(loss=f"{total_loss / seen:.3f}")
    return {"loss": total_loss / max(1, seen), "acc": correct / max(1, seen), "images": seen}


def evaluate(model, inputs, labels, *, amp: bool = False) -> dict[str, float]:
    """Validation loss, top-1 and top-3 on a held-out set (never the test set)."""
    return accuracy_metrics(predict_logits(model, inputs, amp=amp), labels)


def hardware_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    device = select_device(args.device)
    if device.type == "cpu":
        configure_cpu_threads()
    out = Path(args.out)
    bundle = load_data(protocol=args.protocol, split=args.split, data_root=args.data_root)
    train_x = images_to_tensor(bundle.train_images[: args.limit_train], device)
    train_y = torch.from_numpy(bundle.train_labels[: args.limit_train]).long().to(device)
    val_x = images_to_tensor(bundle.val_images[: args.limit_val], device)
    val_y = torch.from_numpy(bundle.val_labels[: args.limit_val]).long().to(device)
    if args.font_glyphs:
        train_x, train_y = add_font_glyphs(train_x, train_y, bundle.class_names, args.font_glyphs)
    model_args = {"num_classes": len(bundle.class_names), **parse_model_args(args.model_arg)}
    base = None
    if args.init_from is not None:
        base, base_provenance = load_base(args.init_from, args.arch, bundle.class_names, model_args)
        model_args = dict(base["model_args"])
    model = build_model(args.arch, **model_args).to(device)
    if base is not None:
        model.load_state_dict(base["state_dict"])
        print(f"starting from the weights of {args.init_from}")
    params = sum(p.numel() for p in model.parameters())
    print(
        f"{args.arch} {model_args}: {params:,} parameters | {bundle.name}: "
        f"{len(train_x):,} train, {len(val_x):,} val images | device {device}"
    )

    optimizer = make_optimizer(model, args)
    steps_per_epoch = math.ceil(len(train_x) / args.batch_size)
    scheduler = make_schedule(optimizer, args, steps_per_epoch)
    ema = None
    if args.ema > 0:
        ema = torch.optim.swa_utils.AveragedModel(
            model,
            multi_avg_fn=ema_with_warmup(args.ema),
            use_buffers=True,
        )
    generator = torch.Generator().manual_seed(args.seed)
    history, best, best_ckpt, start_epoch = [], {"acc": -1.0}, None, 1
    if args.resume and (out / "last.pt").exists():
        state = load_checkpoint(out / "last.pt")
        model.load_state_dict(state["resume"]["model"])
        optimizer.load_state_dict(state["resume"]["optimizer"])
        scheduler.load_state_dict(state["resume"]["scheduler"])
        generator.set_state(state["resume"]["generator"])
        if ema is not None:
            ema.load_state_dict(state["resume"]["ema"])
        history, best = state["history"], state["resume"]["best"]
        best_ckpt = load_checkpoint(out / "best.pt")
        start_epoch = history[-1]["epoch"] + 1 if history else 1
        print(f"resuming from {out / 'last.pt'} at epoch {start_epoch}")
    model = prepare_for_training(model, device, compile=args.compile)

    config = {k: v for k, v in vars(args).items() if k not in ("resume", "no_progress")}
    config["init_from"] = None if args.init_from is None else str(args.init_from)
    for epoch in range(start_epoch, args.epochs + 1):
        started = time.perf_counter()
        train = train_one_epoch(
            model, train_x, train_y, optimizer, scheduler, args=args, generator=generator, ema=ema
        )
        seconds = time.perf_counter() - started
        released = ema.module if ema is not None else model
        val = evaluate(released, val_x, val_y, amp=device.type == "cuda")
        history.append(
            {
                "epoch": epoch,
                "train_loss": train["loss"],
                "train_acc": train["acc"],
                "val_loss": val["loss"],
                "val_acc": val["acc"],
                "val_top3": val["top3"],
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": seconds,
                "images_per_second": train["images"] / seconds,
            }
        )
        print(
            f"epoch {epoch} | train loss {train['loss']:.3f} | val loss {val['loss']:.3f} | "
            f"val acc {100 * val['acc']:.2f}% | {seconds:.1f} s "
            f"({train['images'] / seconds:.0f} img/s)",
            flush=True,
        )
        metrics = {
            "val_acc": val["acc"],
            "val_top3": val["top3"],
            "val_loss": val["loss"],
            "epoch": epoch,
            "parameters": params,
            "hardware": hardware_description(device),
            "train_seconds": sum(h["seconds"] for h in history),
        }
        ckpt = make_checkpoint(
            model=released,
            arch=args.arch,
            model_args=model_args,
            class_names=bundle.class_names,
            train_config=config,
            data=bundle.provenance,
            metrics=metrics,
            history=history,
            extra=None if base is None else {"base": base_provenance},
        )
        if val["acc"] > best["acc"]:
            best, best_ckpt = {"acc": val["acc"], "epoch": epoch}, ckpt
        else:
            # Keep the selected weights and metrics, but the whole run's learning curves.
            best_ckpt["history"] = history
            best_ckpt["metrics"]["train_seconds"] = metrics["train_seconds"]
        atomic_save(best_ckpt, out / "best.pt")
        resume = {
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "generator": generator.get_state(),
            "ema": ema.state_dict() if ema is not None else None,
            "best": best,
        }
        atomic_save({**ckpt, "resume": resume}, out / "last.pt")
    print(
        f"best val acc {100 * best['acc']:.2f}% at epoch {best.get('epoch')} -> {out / 'best.pt'}"
    )
    return {"best": best, "out": str(out), "history": history}


if __name__ == "__main__":
    main()
