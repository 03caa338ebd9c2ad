"""Train a registered model on an EMNIST protocol or official split.

    python -m training.train --arch rcnn --protocol emnist47 --epochs 30 --out runs/rcnn

Writes `best.pt` (the checkpoint with the best validation accuracy; the test set is never
looked at) and `last.pt` (the same plus optimizer and RNG state, for `--resume`), atomically.
"""

import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from emnist.checkpoint import atomic_save, load_checkpoint, make_checkpoint, unwrap
from emnist.inference import accuracy_metrics, predict_logits, select_device
from emnist.models import build_model
from training import precision
from training.augment import PRESETS, augment_batch
from training.finetune import load_base
from training.sources import Data, load_tensors
from training.speed import configure_cpu_threads, prepare_for_training
from training.train_options import parse_args, parse_model_args


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
    order = torch.randperm(len(inputs), generator=generator).to(inputs.device)
    total_loss = correct = seen = 0
    batches = range(0, len(order), args.batch_size)
    bar = tqdm(batches, desc="train", leave=False, disable=args.no_progress or None)
    for start in bar:
        idx = order[start : start + args.batch_size]
        x = augment_batch(inputs[idx], augment, generator)
        y = labels[idx]
        with precision.autocast(args.precision, x.device):
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


@dataclass
class Run:
    """Everything one training run carries from epoch to epoch (and saves for --resume)."""

    model: nn.Module
    model_args: dict
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: torch.optim.swa_utils.AveragedModel | None
    generator: torch.Generator
    base_provenance: dict | None = None
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"acc": -1.0})
    best_ckpt: dict | None = None
    start_epoch: int = 1

    @property
    def released(self) -> nn.Module:
        """The weights a checkpoint holds: the EMA average when there is one."""
        return self.ema.module if self.ema is not None else self.model


def build_run(args, data: Data, device: torch.device) -> Run:
    """The model (from scratch or --init-from), optimizer, schedule, EMA and shuffling RNG."""
    model_args = {"num_classes": len(data.bundle.class_names), **parse_model_args(args.model_arg)}
    base, provenance = None, None
    if args.init_from is not None:
        base, provenance = load_base(args.init_from, args.arch, data.bundle.class_names, model_args)
        model_args = dict(base["model_args"])
    model = build_model(args.arch, **model_args).to(device)
    if base is not None:
        model.load_state_dict(base["state_dict"])
        print(f"starting from the weights of {args.init_from}")
    optimizer = make_optimizer(model, args)
    steps_per_epoch = math.ceil(len(data.train_x) / args.batch_size)
    scheduler = make_schedule(optimizer, args, steps_per_epoch)
    ema = None
    if args.ema > 0:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=ema_with_warmup(args.ema), use_buffers=True
        )
    generator = torch.Generator().manual_seed(args.seed)
    return Run(model, model_args, optimizer, scheduler, ema, generator, provenance)


def resume(run: Run, out: Path) -> None:
    """Continue from `out/last.pt`: weights, optimizer, schedule, RNG, EMA and history."""
    state = load_checkpoint(out / "last.pt")
    run.model.load_state_dict(state["resume"]["model"])
    run.optimizer.load_state_dict(state["resume"]["optimizer"])
    run.scheduler.load_state_dict(state["resume"]["scheduler"])
    run.generator.set_state(state["resume"]["generator"])
    if run.ema is not None:
        run.ema.load_state_dict(state["resume"]["ema"])
    run.history, run.best = state["history"], state["resume"]["best"]
    run.best_ckpt = load_checkpoint(out / "best.pt")
    run.start_epoch = run.history[-1]["epoch"] + 1 if run.history else 1
    print(f"resuming from {out / 'last.pt'} at epoch {run.start_epoch}")


def run_epoch(run: Run, data: Data, args, epoch: int, device: torch.device) -> dict:
    """Train one epoch, validate the released weights, append and print the epoch's record."""
    started = time.perf_counter()
    train = train_one_epoch(
        run.model,
        data.train_x,
        data.train_y,
        run.optimizer,
        run.scheduler,
        args=args,
        generator=run.generator,
        ema=run.ema,
    )
    seconds = time.perf_counter() - started
    val = evaluate(run.released, data.val_x, data.val_y, amp=args.precision == "bf16")
    record = {
        "epoch": epoch,
        "train_loss": train["loss"],
        "train_acc": train["acc"],
        "val_loss": val["loss"],
        "val_acc": val["acc"],
        "val_top3": val["top3"],
        "lr": run.optimizer.param_groups[0]["lr"],
        "seconds": seconds,
        "images_per_second": train["images"] / seconds,
    }
    run.history.append(record)
    print(
        f"epoch {epoch} | train loss {train['loss']:.3f} | val loss {val['loss']:.3f} | "
        f"val acc {100 * val['acc']:.2f}% | {seconds:.1f} s "
        f"({train['images'] / seconds:.0f} img/s)",
        flush=True,
    )
    return record


def save_checkpoints(run: Run, data: Data, args, record: dict, device: torch.device) -> None:
    """best.pt (selected on validation accuracy) and last.pt (plus the state --resume needs)."""
    metrics = {
        "val_acc": record["val_acc"],
        "val_top3": record["val_top3"],
        "val_loss": record["val_loss"],
        "epoch": record["epoch"],
        "parameters": sum(p.numel() for p in unwrap(run.model).parameters()),
        "hardware": hardware_description(device),
        "train_seconds": sum(h["seconds"] for h in run.history),
    }
    # Plain values only (paths as text): checkpoints load with weights_only=True.
    config = {
        k: str(v) if isinstance(v, Path) else v
        for k, v in vars(args).items()
        if k not in ("resume", "no_progress")
    }
    ckpt = make_checkpoint(
        model=run.released,
        arch=args.arch,
        model_args=run.model_args,
        class_names=data.bundle.class_names,
        train_config=config,
        data=data.bundle.provenance,
        metrics=metrics,
        history=run.history,
        extra=None if run.base_provenance is None else {"base": run.base_provenance},
    )
    if record["val_acc"] > run.best["acc"]:
        run.best, run.best_ckpt = {"acc": record["val_acc"], "epoch": record["epoch"]}, ckpt
    else:
        # Keep the selected weights and metrics, but the whole run's learning curves.
        run.best_ckpt["history"] = run.history
        run.best_ckpt["metrics"]["train_seconds"] = metrics["train_seconds"]
    out = Path(args.out)
    atomic_save(run.best_ckpt, out / "best.pt")
    state = {
        "model": unwrap(run.model).state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "generator": run.generator.get_state(),
        "ema": run.ema.state_dict() if run.ema is not None else None,
        "best": run.best,
    }
    atomic_save({**ckpt, "resume": state}, out / "last.pt")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv, __doc__)
    torch.manual_seed(args.seed)
    device = select_device(args.device)
    if device.type == "cpu":
        configure_cpu_threads()
    args.precision = precision.resolve(args.precision, device)  # recorded in the checkpoint
    data = load_tensors(args, device)
    run = build_run(args, data, device)
    params = sum(p.numel() for p in run.model.parameters())
    print(
        f"{args.arch} {run.model_args}: {params:,} parameters | {data.bundle.name}: "
        f"{len(data.train_x):,} train, {len(data.val_x):,} val images | device {device}, "
        f"{precision.why(args.precision, device)}"
    )
    out = Path(args.out)
    if args.resume and (out / "last.pt").exists():
        resume(run, out)
    run.model = prepare_for_training(run.model, device, compile=args.compile)
    for epoch in range(run.start_epoch, args.epochs + 1):
        record = run_epoch(run, data, args, epoch, device)
        save_checkpoints(run, data, args, record, device)
    best = run.best
    print(
        f"best val acc {100 * best['acc']:.2f}% at epoch {best.get('epoch')} -> {out / 'best.pt'}"
    )
    return {"best": best, "out": str(out), "history": run.history}


if __name__ == "__main__":
    main()
