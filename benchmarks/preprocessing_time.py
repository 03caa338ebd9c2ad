"""Preprocessing time per drawing, one core: the canvas PNG in, the 28x28 out, decode included.

    python -m benchmarks.preprocessing_time            # -> a table on stdout (about 40 s)

The drawings are the load generator's (benchmarks/serving/drawings.py): 280x280 canvases as the
page posts them (8-bit gray PNG, rows unfiltered), the same saved by Pillow (adaptive row filters,
what another client may send) and as the canvas exports them (RGBA PNG, what browsers without
CompressionStream send). Each is preprocessed ROUNDS times in turn; reported is the median over
all calls, in ms, with the parts: `decode_image` alone, and the rest (the ink statistics, the
crop, the frame's resize and blur). One torch-free thread, as a TorchServe worker runs it.
"""

from __future__ import annotations

import argparse
import ctypes
import resource
import statistics
import time

from benchmarks.serving.drawings import drawings
from emnist.preprocessing import decode_image, preprocess
from training.cli import HelpFormatter

ROUNDS = 200
# glibc's mallopt parameter: how much of the heap's top it keeps when memory is freed.
M_TOP_PAD = -2


def timed_ms(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return 1000 * (time.perf_counter() - start)


def measure(pngs: list[bytes], rounds: int) -> dict[str, float]:
    for png in pngs:  # warm: first calls pay imports and allocations
        preprocess(png)
    # One loop per figure. Page faults are counted because they can cost more than the work:
    # whether glibc hands a call's large arrays back to the kernel (and faults them in again on
    # the next call) depends on the heap's layout, which any earlier allocation can change;
    # inside a TorchServe worker under load they stay under 0.3 per answer (docs/benchmarks.md).
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    total = [timed_ms(preprocess, png) for _ in range(rounds) for png in pngs]
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    decode = [timed_ms(decode_image, png) for _ in range(rounds) for png in pngs]
    images = [decode_image(png) for png in pngs]
    rest = [timed_ms(preprocess, image) for _ in range(rounds) for image in images]
    return {
        "median_ms": statistics.median(total),
        "p90_ms": statistics.quantiles(total, n=10)[-1],
        "decode_ms": statistics.median(decode),
        "after_decode_ms": statistics.median(rest),
        "page_faults_per_call": faults / len(total),
        "calls": len(total),
    }


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--rounds", type=int, default=ROUNDS, help="passes over the drawings")
    p.add_argument("--drawings", type=int, default=8, help="distinct drawings")
    args = p.parse_args(argv)
    pictures = (
        ("gray PNG (the page)", False, "page"),
        ("gray PNG (Pillow-saved)", False, "pillow"),
        ("RGBA PNG (canvas export)", True, "pillow"),
    )
    pngs = {
        name: [png for _, png in drawings(args.drawings, rgba=rgba, encoder=encoder)]
        for name, rgba, encoder in pictures
    }
    # Twice: with glibc's default heap, which may hand its top back to the kernel after every
    # call (page faults; whether it does depends on the process's heap layout), then with the
    # top kept, as in a TorchServe worker under load (0.2-0.3 faults per answer there).
    results = {}
    for heap in ("default", "top kept"):
        if heap == "top kept":
            ctypes.CDLL("libc.so.6").mallopt(M_TOP_PAD, 64 << 20)
        for name, kind in pngs.items():
            results[f"{name}, {heap} heap"] = measure(kind, args.rounds)
    columns = ("picture, heap", "median ms", "p90 ms", "decode ms", "after decode ms")
    print("| " + " | ".join((*columns, "faults/call", "calls")) + " |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(
            f"| {name} | {r['median_ms']:.3f} | {r['p90_ms']:.3f} | {r['decode_ms']:.3f} "
            f"| {r['after_decode_ms']:.3f} | {r['page_faults_per_call']:.1f} | {r['calls']} |"
        )
    return results


if __name__ == "__main__":
    main()
