"""bf16 against float32 inference, through an archive's own handler, on a complete test set.

    .venv/bin/python benchmarks/precision_agreement.py model_store/emnist-cnn-2.0.mar

Runs the archive's handler (mar/archive.py, a clean interpreter) over every image of its
protocol's test set twice, with EMNIST_PRECISION=fp32 and =bf16, and reports both top-1
figures, their difference and how often the two agree on the top-1 class. The bar for serving
bf16 by default (issue 15): top-1 within 0.05 points of float32 and agreement of at least 99.8%.
Archives built before handler precision existed answer in float32 both times: the script says so.
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

MAX_TOP1_DELTA = 0.0005
MIN_AGREEMENT = 0.998


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("archive", type=Path)
    parser.add_argument("--limit", type=int, default=None, help="the first N test images only")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    config = archive.checkpoint(args.archive).get("train_config") or {}
    bundle = load_data(protocol=config.get("protocol"), split=config.get("split"))
    images, labels = bundle.test_images[: args.limit], bundle.test_labels[: args.limit]
    top, result = {}, {"archive": str(args.archive), "images": len(images)}
    for precision in ("fp32", "bf16"):
        started = time.perf_counter()
        probabilities, info = archive.probabilities(args.archive, images, precision=precision)
        top[precision] = probabilities.argmax(axis=1)
        result[precision] = {
            "ran_as": info["precision"],
            "top1": float(np.mean(top[precision] == labels)),
            "seconds": round(time.perf_counter() - started, 1),
        }
    result["top1_delta"] = result["bf16"]["top1"] - result["fp32"]["top1"]
    result["agreement"] = float(np.mean(top["fp32"] == top["bf16"]))
    result["passes"] = (
        abs(result["top1_delta"]) <= MAX_TOP1_DELTA and result["agreement"] >= MIN_AGREEMENT
    )
    if result["bf16"]["ran_as"] != "bf16":
        print("note: this archive's handler predates the precision setting: both ran in fp32")
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
