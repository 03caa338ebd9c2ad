"""The limit: the served handler's own preprocess + inference + postprocess, in-process.

    python -m benchmarks.serving.inprocess model_store/emnist-cnn-1.0.mar --threads 1 --seconds 3

Unpacks the archive, builds the handler exactly as a TorchServe worker does (its
model-config.yaml, `handlers.context.minimal_context`) and calls `handle` on batches of
canvas-like PNG requests: no HTTP, no frontend, no worker protocol. What TorchServe adds on top
is everything else. Prints JSON: per batch size, images/s, per-image latency and the share of
each phase (the handler's own timings).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path


def timed_handler(handler):
    """Wrap the handler's three phases to record their wall time per call."""
    timings = {"preprocess": [], "inference": [], "postprocess": []}
    for phase in timings:
        original = getattr(handler, phase)

        def wrapper(*args, _original=original, _phase=phase, **kwargs):
            start = time.perf_counter()
            result = _original(*args, **kwargs)
            timings[_phase].append(time.perf_counter() - start)
            return result

        setattr(handler, phase, wrapper)
    return timings


def measure(handler, context, rows: list[dict], batch: int, seconds: float) -> dict:
    from handlers.context import start_batch

    headers = [{"content-type": "image/png"}] * batch
    requests = [rows[i % len(rows)] for i in range(batch)]
    for _ in range(3):  # warm-up: first calls allocate and pick kernels
        start_batch(context, batch, headers)
        handler.handle(requests, context)
    timings = timed_handler(handler)
    latencies = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start_batch(context, batch, headers)
        start = time.perf_counter()
        answers = handler.handle(requests, context)
        latencies.append(time.perf_counter() - start)
        assert len(answers) == batch and all("predictions" in a for a in answers), answers
    for phase in timings:
        setattr(handler, phase, getattr(type(handler), phase).__get__(handler))
    total = sum(latencies)
    return {
        "batch": batch,
        "images_per_s": batch * len(latencies) / total,
        "batch_ms_p50": statistics.median(latencies) * 1000,
        "per_image_ms": total / (batch * len(latencies)) * 1000,
        "phase_ms_per_image": {
            phase: sum(values) / (batch * len(values)) * 1000 for phase, values in timings.items()
        },
    }


def use_channels_last(model) -> None:
    """Weights and every input in channels-last (NHWC) memory: oneDNN's preferred layout."""
    import torch

    model.to(memory_format=torch.channels_last)
    model.register_forward_pre_hook(
        lambda _module, args: (args[0].contiguous(memory_format=torch.channels_last),)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("archive", type=Path)
    parser.add_argument("--threads", type=int, default=None, help="default: the archive's")
    parser.add_argument("--batch", type=int, action="append", help="default: 1 and 8")
    parser.add_argument("--seconds", type=float, default=3.0, help="per batch size")
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="what-if: run the model in channels-last memory format (not what is served)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        os.environ["EMNIST_CPU_THREADS"] = str(args.threads)  # read by the handler
    with tempfile.TemporaryDirectory(prefix="emnist-limit-") as model_dir:
        with zipfile.ZipFile(args.archive) as z:
            z.extractall(model_dir)
        sys.path.insert(0, model_dir)  # the archive's own handler and code, as in a worker
        import torch
        from emnist_handler import EmnistHandler

        from benchmarks.serving.drawings import drawings
        from handlers.context import minimal_context

        context = minimal_context(model_dir)
        handler = EmnistHandler()
        handler.initialize(context)
        if args.channels_last:
            use_channels_last(handler.model)
        rows = [{"body": png} for _, png in drawings(8)]
        results = [
            measure(handler, context, rows, batch, args.seconds) for batch in args.batch or [1, 8]
        ]
    layout = "channels_last" if args.channels_last else "contiguous"
    print(json.dumps({"threads": torch.get_num_threads(), "layout": layout, "results": results}))


if __name__ == "__main__":
    main()
