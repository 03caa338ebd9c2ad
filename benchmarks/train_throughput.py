"""Training throughput (images/s) of the registered models, variants measured side by side.

    .venv/bin/python benchmarks/train_throughput.py --arch rcnn:norm=lrn --arch rcnn:norm=bn

One training step is forward + cross-entropy + backward + optimizer step on a fixed random
batch of 28x28 images and 47 classes (data loading and augmentation excluded). Variants:

- naive:   the "before": NCHW memory format, PyTorch's default allocator and OpenMP settings,
           and for the RCNN `reference_rcnn_forward`, the direct transcription of the paper
           (feed-forward convolution recomputed at every step, `nn.LocalResponseNorm`).
           Same parameters, same function.
- eager:   the models as shipped, prepared by `training.speed.prepare_for_training`.
- passive: eager with OMP_WAIT_POLICY=PASSIVE (the recommended setting on shared cores).
- compile: eager plus torch.compile (its first step includes compilation).
- bf16:    eager under bfloat16 autocast (what `training.train --precision auto` picks on a
           CPU with native bf16, training/precision.py).

`--end-to-end` measures what a user gets instead: one epoch of `python -m training.train` on
20,480 training images (augmentation, EMA and the validation pass included; the epoch line's
img/s counts the training phase), per architecture in float32 and in bf16, the runs interleaved
over repeats. Needs the EMNIST files (../shared/emnist).

Each (arch, variant) runs in its own process, so process-wide settings (allocator, OpenMP,
compile caches) stay with their variant; one process runs at a time, the variants interleaved
within each repeat (the order rotating), so the load of other jobs on a shared machine hits
them alike. The table gives the median over repeats and the range.

A float32 ceiling to read the numbers against: an RCNN-96 step costs about 1 GFLOP per image
(165M multiply-adds forward, twice that backward), and oneDNN's convolutions ran at about
230 GFLOP/s on this project's 2 cores, so no float32 implementation of the same function with
direct convolutions trains faster than about 230 images/s there.
"""

import argparse
import ast
import contextlib
import json
import multiprocessing
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emnist.models import build_model, list_models
from emnist.models.rcnn import RCNN, ReluLRN
from training.speed import (
    available_cpus,
    configure_cpu_threads,
    maybe_compile,
    prepare_for_training,
)

VARIANTS = ("naive", "eager", "passive", "compile", "bf16")
NUM_CLASSES = 47


def reference_norm(module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The RCNN's normalised nonlinearity written with stock PyTorch layers."""
    if isinstance(module, ReluLRN):
        return F.local_response_norm(F.relu(z), module.size, module.alpha, module.beta, k=1.0)
    return F.relu(nn.BatchNorm2d.forward(module, z))


def reference_rcnn_forward(model: RCNN, x: torch.Tensor) -> torch.Tensor:
    """The paper's equations transcribed directly, with `model`'s own parameters."""

    def rcl(layer, u):
        state = reference_norm(layer.norms[0], layer.feedforward(u))
        for t in range(1, layer.steps + 1):
            state = reference_norm(layer.norms[t], layer.feedforward(u) + layer.recurrent(state))
        return state

    x = model.dropout(model.pool(reference_norm(model.stem_norm, model.stem(x))))
    x = model.dropout(model.pool(rcl(model.rcl2, rcl(model.rcl1, x))))
    x = rcl(model.rcl4, rcl(model.rcl3, x))
    return model.classifier(model.dropout(torch.amax(x, dim=(2, 3))))


class NaiveRCNN(nn.Module):
    """An RCNN run through `reference_rcnn_forward` (shares the wrapped model's parameters)."""

    def __init__(self, model: RCNN):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reference_rcnn_forward(self.model, x)


def parse_arch(spec: str) -> tuple[str, dict]:
    """`name[:key=value,...]`, e.g. `rcnn:norm=bn,width=64`."""
    name, _, rest = spec.partition(":")
    kwargs = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value
    if name not in list_models():
        raise SystemExit(f"unknown arch {name!r}; registered: {', '.join(list_models())}")
    return name, kwargs


def default_archs() -> list[str]:
    archs = [name for name in list_models() if name != "rcnn"]
    return [*archs, "rcnn:norm=lrn", "rcnn:norm=bn"]


def build_variant(model: nn.Module, variant: str, compile_mode: str | None) -> nn.Module:
    if variant == "naive":
        return NaiveRCNN(model) if isinstance(model, RCNN) else model
    prepared = prepare_for_training(model, "cpu")
    if variant == "compile":
        return maybe_compile(prepared, True, mode=compile_mode)
    return prepared


class Runner:
    """One (arch, variant) pair: a model, its optimizer and a fixed random batch."""

    def __init__(self, model: nn.Module, variant: str, args: argparse.Namespace):
        self.model, self.variant = model.train(), variant
        params = list(model.parameters())
        if args.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True)
        else:
            self.optimizer = torch.optim.AdamW(params, lr=1e-3)
        generator = torch.Generator().manual_seed(0)
        self.x = torch.rand(args.batch_size, 1, 28, 28, generator=generator)
        self.y = torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=generator)

    def step(self) -> float:
        autocast = (
            torch.autocast("cpu", dtype=torch.bfloat16)
            if self.variant == "bf16"
            else contextlib.nullcontext()
        )
        with autocast:
            loss = F.cross_entropy(self.model(self.x).float(), self.y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def timed(self, steps: int) -> float:
        started = time.perf_counter()
        for _ in range(steps):
            self.step()
        return steps * len(self.x) / (time.perf_counter() - started)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--arch",
        action="append",
        default=None,
        help="NAME[:key=value,...], repeatable (default: every registered model, "
        "the RCNN with norm=lrn and norm=bn)",
    )
    p.add_argument(
        "--variant",
        action="append",
        choices=VARIANTS,
        default=None,
        help="repeatable (default: naive, eager and passive)",
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=3, help="timed steps per repeat")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before the first repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: CPUs)")
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode for 'compile'")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument(
        "--end-to-end",
        action="store_true",
        help="one epoch of training.train per arch and precision (fp32, bf16) instead",
    )
    p.add_argument("--limit-train", type=int, default=20480, help="--end-to-end: images")
    args = p.parse_args(argv)
    args.arch = args.arch or default_archs()
    args.variant = args.variant or ["naive", "eager", "passive"]
    return args


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| arch | params | variant | images/s | range | vs naive | first step |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        speedup = f"{row['speedup']:.2f}x" if row["speedup"] else "-"
        lines.append(
            f"| {row['arch']} | {row['params'] / 1e6:.2f}M | {row['variant']} | "
            f"{row['images_per_s']:.0f} | {row['min']:.0f}-{row['max']:.0f} | {speedup} | "
            f"{row['first_step_s']:.1f} s |"
        )
    return "\n".join(lines)


def worker_environment(variant: str) -> dict[str, str]:
    """The environment a variant's process starts with; libgomp reads OMP_WAIT_POLICY when
    torch is imported, so it cannot be changed inside a running process."""
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    if variant == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def worker(conn, spec: str, variant: str, args: argparse.Namespace) -> None:
    """One (arch, variant) in its own process: process-wide settings (threads, allocator, the
    compile cache) then apply to that variant alone. Runs `steps` steps per request."""
    configure_cpu_threads(args.threads)
    torch.manual_seed(0)
    name, kwargs = parse_arch(spec)
    model = build_model(name, num_classes=NUM_CLASSES, **kwargs)
    params = sum(p.numel() for p in model.parameters())
    runner = Runner(build_variant(model, variant, args.compile_mode), variant, args)
    started = time.perf_counter()
    runner.step()
    first_step_s = time.perf_counter() - started
    for _ in range(args.warmup):
        runner.step()
    conn.send((params, first_step_s))
    while (steps := conn.recv()) is not None:
        conn.send(runner.timed(steps))


def train_command(spec: str, precision: str, args: argparse.Namespace, out: Path) -> list[str]:
    name, kwargs = parse_arch(spec)
    command = [sys.executable, "-m", "training.train", "--arch", name, "--epochs", "1"]
    command += [f"--model-arg={k}={v}" for k, v in kwargs.items()]
    command += ["--limit-train", str(args.limit_train), "--precision", precision]
    return [*command, "--no-progress", "--out", str(out)]


EPOCH_LINE = re.compile(r"^epoch 1 \|.*\| ([0-9.]+) s \(([0-9]+) img/s\)", re.M)


def end_to_end(args: argparse.Namespace) -> list[dict]:
    """One training epoch per (arch, precision), repeated and interleaved; median img/s."""
    rates: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="train-e2e-") as tmp:
        for repeat in range(args.repeats):
            for spec in args.arch:
                for precision in ("fp32", "bf16")[:: 1 if repeat % 2 == 0 else -1]:
                    out = Path(tmp) / f"{spec}-{precision}-{repeat}".replace(":", "_")
                    done = subprocess.run(
                        train_command(spec, precision, args, out),
                        cwd=Path(__file__).resolve().parents[1],
                        capture_output=True,
                        text=True,
                    )
                    match = EPOCH_LINE.search(done.stdout)
                    if done.returncode != 0 or match is None:
                        raise SystemExit(f"training failed:\n{done.stdout}\n{done.stderr[-2000:]}")
                    rates.setdefault((spec, precision), []).append(float(match[2]))
                    print(f"{spec} {precision}: {match[2]} img/s", file=sys.stderr)
    rows = []
    for (spec, precision), values in rates.items():
        fp32 = statistics.median(rates[spec, "fp32"])
        rate = statistics.median(values)
        rows.append(
            {
                "arch": spec,
                "precision": precision,
                "images_per_s": rate,
                "min": min(values),
                "max": max(values),
                "vs_fp32": rate / fp32,
            }
        )
    print(f"one epoch of training.train on {args.limit_train:,} images; median of {args.repeats}")
    print("| arch | precision | images/s | range | vs fp32 |\n|---|---|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['arch']} | {row['precision']} | {row['images_per_s']:.0f} | "
            f"{row['min']:.0f}-{row['max']:.0f} | {row['vs_fp32']:.2f}x |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"end_to_end": rows}, indent=2) + "\n")
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if args.end_to_end:
        return end_to_end(args)
    threads = args.threads or available_cpus()
    context = multiprocessing.get_context("spawn")
    workers, results = {}, {}
    try:
        # Started one at a time, so that a compiling worker does not slow a measured one.
        for spec in args.arch:
            for variant in args.variant:
                conn, child = context.Pipe()
                process = context.Process(target=worker, args=(child, spec, variant, args))
                saved, env = dict(os.environ), worker_environment(variant)
                os.environ.clear()
                os.environ.update(env)
                try:
                    process.start()
                finally:
                    os.environ.clear()
                    os.environ.update(saved)
                params, first_step_s = conn.recv()
                workers[spec, variant] = (process, conn)
                results[spec, variant] = {"params": params, "first": first_step_s, "rates": []}
                print(f"ready: {spec} {variant} ({first_step_s:.1f} s)", file=sys.stderr)
        keys = list(workers)
        for repeat in range(args.repeats):
            shift = repeat % len(keys)
            for key in keys[shift:] + keys[:shift]:
                workers[key][1].send(args.steps)
                results[key]["rates"].append(workers[key][1].recv())
    finally:
        for process, conn in workers.values():
            if process.is_alive():
                conn.send(None)
                process.join(timeout=10)

    rows = []
    for (spec, variant), result in results.items():
        naive = results.get((spec, "naive"))
        rate = statistics.median(result["rates"])
        rows.append(
            {
                "arch": spec,
                "params": result["params"],
                "variant": variant,
                "images_per_s": rate,
                "min": min(result["rates"]),
                "max": max(result["rates"]),
                "speedup": rate / statistics.median(naive["rates"]) if naive else None,
                "first_step_s": result["first"],
            }
        )
    print(
        f"batch {args.batch_size}, {args.optimizer}, {threads} threads, torch {torch.__version__}, "
        f"{platform.machine()}; median of {args.repeats} repeats x {args.steps} steps"
    )
    print(markdown_table(rows))
    if args.json is not None:
        meta = {
            "argv": sys.argv[1:] if argv is None else argv,
            "threads": threads,
            "torch": torch.__version__,
            "batch_size": args.batch_size,
            "optimizer": args.optimizer,
        }
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
