"""Size and cost of a model: parameters, multiply-adds per image, in-process latency.

Used by the model card inside every archive (serving/model_card.py) and by the study
(benchmarks/study.py), so both quote the same figures.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

IMAGE_SHAPE = (1, 28, 28)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.inference_mode()
def multiply_adds(model: nn.Module) -> int:
    """Multiply-adds of one 28x28 image through the model in eval mode.

    torch's FlopCounterMode counts convolutions and matrix products (2 FLOPs per multiply-add);
    normalisation, activations and pooling are not counted: they are a few percent here.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(1, *IMAGE_SHAPE, device=device))
    model.train(was_training)
    return counter.get_total_flops() // 2


@torch.inference_mode()
def latency_ms(
    model: nn.Module,
    batch_size: int,
    *,
    repeats: int = 30,
    warmup: int = 5,
    channels_last: bool = True,
) -> dict[str, float]:
    """Median (and spread) wall time of one forward pass of `batch_size` images, in ms.

    On the CPU with the torch threads already configured by the caller; random inputs, since
    the arithmetic does not depend on the pixel values.
    """
    model.eval()
    device = next(model.parameters()).device
    x = torch.rand(batch_size, *IMAGE_SHAPE, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    median = statistics.median(times)
    return {
        "batch_size": batch_size,
        "median_ms": median,
        "p10_ms": statistics.quantiles(times, n=10)[0],
        "p90_ms": statistics.quantiles(times, n=10)[-1],
        "per_image_ms": median / batch_size,
        "images_per_second": 1000 * batch_size / median,
    }
