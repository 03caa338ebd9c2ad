"""The limit: the served handler's own preprocess + inference + postprocess, in-process.

    python -m benchmarks.serving.inprocess model_store/emnist-cnn-1.2.mar --threads 1 --seconds 3

Runs the archive's own handler, built exactly as a TorchServe worker builds it (its
model-config.yaml, a real `Context`), in a clean interpreter (`mar.archive.time_handler`), and
calls `handle` on batches of canvas-like PNG requests: no HTTP, no frontend, no worker protocol.
What TorchServe adds on top is everything else. Prints JSON: per batch size, images/s,
per-image latency and the share of each phase (the handler's own timings).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.serving.drawings import drawings
from mar import archive


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("archive", type=Path)
    parser.add_argument("--threads", type=int, default=None, help="default: the archive's")
    parser.add_argument("--batch", type=int, action="append", help="default: 1 and 8")
    parser.add_argument(
        "--precision", choices=("auto", "fp32", "bf16"), help="default: the archive's"
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="per batch size")
    args = parser.parse_args(argv)
    bodies = [png for _, png in drawings(8)]
    batches = args.batch or [1, 8]
    result = archive.time_handler(
        args.archive, bodies, batches, args.seconds, threads=args.threads, precision=args.precision
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
