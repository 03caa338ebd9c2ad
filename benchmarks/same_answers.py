"""Do two archives answer alike? Both handlers over a complete test set, probabilities compared.

    .venv/bin/python -m benchmarks.same_answers \
        model_store/emnist-cnn-2.1.mar model_store/emnist-cnn-2.2.mar    # about 1 min

For a release that changes code but not weights (emnist-cnn 2.2: faster preprocessing, the
same bytes out), this shows that the new archive's accuracy figures and precision agreement are
the old one's: each archive's own handler (mar/archive.py, a clean interpreter) reads every test
image of the first archive's protocol in the same arithmetic, and the script reports both top-1
figures, how often the top-1 classes agree and the largest difference of any probability.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mar import archive
from training.protocol import load_data


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--limit", type=int, default=None, help="the first N test images only")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    parser.add_argument("--protocol", help="whose test set (default: the first archive's)")
    args = parser.parse_args(argv)
    config = archive.checkpoint(args.first).get("train_config") or {}
    if args.protocol:
        config = {"protocol": args.protocol}
    if not (config.get("protocol") or config.get("split")):
        parser.error(f"{args.first} does not record its protocol: give --protocol")
    bundle = load_data(protocol=config.get("protocol"), split=config.get("split"))
    images, labels = bundle.test_images[: args.limit], bundle.test_labels[: args.limit]
    result, answers = {"images": len(images), "precision": args.precision}, []
    for mar in (args.first, args.second):
        started = time.perf_counter()
        probabilities, info = archive.probabilities(mar, images, precision=args.precision)
        answers.append(probabilities)
        result[str(mar)] = {
            "ran_as": info["precision"],
            "top1": float(np.mean(probabilities.argmax(axis=1) == labels)),
            "seconds": round(time.perf_counter() - started, 1),
        }
    first, second = answers
    result["top1_agreement"] = float(np.mean(first.argmax(axis=1) == second.argmax(axis=1)))
    result["max_probability_difference"] = float(np.abs(first - second).max())
    result["identical"] = bool(np.array_equal(first, second))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
