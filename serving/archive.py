"""Checkpoint -> `model_store/<name>-<version>.mar`, checked before it lands in the store.

    python -m serving.archive runs/cnn-emnist47-s0/best.pt --version 1.0

The archive holds the checkpoint itself (loaded with `weights_only=True` and rebuilt through the
registry: no pickled modules, no `--model-file`), `index_to_name.json` written from the
checkpoint's label map, the model card (`model-card.json`, `MODEL_CARD.md`: data, protocol,
accuracy, parameters, training time and hardware; serving/model_card.py), a
`model-config.yaml` (workers, batching, timeouts, CPU threads), the handler module at the root
and the core package (`emnist/`) exactly as it is in the repository: no other project code.

The check runs the archive's own copy of the code, in a separate interpreter where nothing else
can be imported from the repository (mar/archive.py), on a batch of [a drawing, a blank canvas,
garbage], and compares the drawing's probabilities with the repository's in-process prediction.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

from emnist.checkpoint import atomic_save, load_checkpoint, model_from_checkpoint
from emnist.files import atomic_write, atomic_write_json
from emnist.labels import LABELS_FILE, labels_json
from emnist.preprocessing import PREPROCESSING_VERSION, preprocess, to_model_input
from mar import archive
from serving.model_card import build_card, card_markdown, check_test_metrics

ROOT = Path(__file__).resolve().parent.parent
HANDLER = ROOT / "handlers" / "emnist_handler.py"
CORE = ROOT / "emnist"  # the only project package an archive ships
DEFAULT_NAMES = {"cnn": "emnist-cnn", "cnn-seed": "emnist-cnn", "rcnn": "emnist-rcnn"}
# TorchServe's own rule for model names; versions go into URLs, so no slashes either.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]*$")
VERSION_PATTERN = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.\-]*$")
CHECKPOINT_FILE = "checkpoint.pt"


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    try:
        ckpt = load_checkpoint(args.checkpoint)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from err
    name = args.name or default_name(ckpt["arch"], (ckpt.get("train_config") or {}).get("protocol"))
    version = args.version or ckpt.get("version")
    if not version:
        raise SystemExit("error: the checkpoint records no version: pass --version (e.g. 1.0)")
    version = str(version)
    for what, value, pattern in (
        ("name", name, NAME_PATTERN),
        ("version", version, VERSION_PATTERN),
    ):
        if not pattern.match(value):
            raise SystemExit(f"error: invalid model {what} {value!r}")
    if ckpt.get("preprocessing_version") != PREPROCESSING_VERSION:
        raise SystemExit(
            f"error: the checkpoint was trained with preprocessing version "
            f"{ckpt.get('preprocessing_version')!r}, the code has {PREPROCESSING_VERSION!r}: "
            "retrain it, or archive it from the commit it was trained with"
        )
    target = Path(args.store) / f"{name}-{version}.mar"
    if target.exists() and not args.force:
        raise SystemExit(
            f"error: {target} exists; a released version never changes: pick a new --version "
            "(or --force to overwrite an unreleased one)"
        )
    config = {
        "minWorkers": args.workers,
        "maxWorkers": args.workers,
        "batchSize": args.batch_size,
        "maxBatchDelay": args.max_batch_delay,
        "responseTimeout": args.response_timeout,
        "handler": {"cpu_threads": args.cpu_threads, "precision": args.precision},
    }
    test_metrics = None
    if args.test_metrics:
        test_metrics = json.loads(args.test_metrics.read_text())
        try:
            check_test_metrics(test_metrics, ckpt)
        except ValueError as err:
            raise SystemExit(f"error: {args.test_metrics}: {err}") from err
    card = build_card(ckpt, name, version, test_metrics)
    with tempfile.TemporaryDirectory(prefix="emnist-archive-") as tmp:
        mar = build_archive(ckpt, name, version, config, card, Path(tmp))
        if not args.no_check:
            print(check_archive(mar, ckpt, tolerance=1e-4 if args.precision == "fp32" else 2e-2))
        atomic_write(target, mar.read_bytes())
    target.chmod(0o644)  # atomic_write's temporary file is private; a release is not
    size = target.stat().st_size / 1e6
    print(f"wrote {target} ({size:.2f} MB): {name} {version}, {ckpt['arch']}")
    return target


def default_name(arch: str, protocol: str | None = None) -> str:
    """emnist-cnn / emnist-rcnn for 47 classes; a digits model gets a name of its own, so
    archiving one can never shadow a 47-class model of the same architecture."""
    if protocol == "digits":
        return "emnist-digits" if arch in ("cnn", "cnn-seed") else f"emnist-digits-{arch}"
    return DEFAULT_NAMES.get(arch, f"emnist-{arch}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m serving.archive",
        description="Package a checkpoint as a TorchServe model archive <name>-<version>.mar.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("checkpoint", type=Path, help="a checkpoint from training (best.pt)")
    parser.add_argument(
        "--name",
        help="model name (default by arch and protocol: emnist-cnn, emnist-rcnn, emnist-digits)",
    )
    parser.add_argument("--version", help="model version (default: the checkpoint's 'version')")
    parser.add_argument("--store", default=str(ROOT / "model_store"), help="model store folder")
    # Defaults: the best of `make bench-sweep` on 2 cores (docs/benchmarks/sweep.md): 2 workers
    # of 1 torch thread each, batches of up to 8 of the requests already waiting, no delay to
    # fill them (under load they fill while the workers are busy; a lone request goes at once).
    parser.add_argument("--workers", type=int, default=2, help="workers per model version")
    parser.add_argument("--batch-size", type=int, default=8, help="most requests per batch")
    parser.add_argument(
        "--max-batch-delay", type=int, default=0, help="ms to wait for a batch to fill up"
    )
    parser.add_argument(
        "--response-timeout", type=int, default=30, help="s before a worker is deemed stuck"
    )
    parser.add_argument("--cpu-threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="CPU inference arithmetic (model-config.yaml; EMNIST_PRECISION overrides it when "
        "serving): auto = bf16 where the CPU has native bf16",
    )
    parser.add_argument(
        "--test-metrics",
        type=Path,
        help="metrics.json of `python -m training.evaluate CHECKPOINT` for the model card",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing archive")
    parser.add_argument("--no-check", action="store_true", help="skip the post-build check")
    args = parser.parse_args(argv)
    for flag in ("workers", "batch_size", "response_timeout", "cpu_threads"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    if args.max_batch_delay < 0:
        # 0 is served as 0 by `make serve` and `make register` (serving/torchserve.py
        # `startup_snapshot`, `Management.register`): TorchServe 0.12 itself reads an archive's
        # maxBatchDelay 0 as "not set", its 100 ms default.
        parser.error("--max-batch-delay must be >= 0")
    return args


def build_archive(ckpt: dict, name: str, version: str, config: dict, card: dict, tmp: Path) -> Path:
    """Stage everything in `tmp` and run torch-model-archiver; returns the .mar path."""
    stage = tmp / "stage"
    for module_file in shipped_files():
        dest = stage / module_file.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(module_file, dest)
    atomic_write_json(stage / LABELS_FILE, labels_json(ckpt["class_names"]))
    atomic_write_json(stage / archive.CARD_JSON, card)
    atomic_write(stage / archive.CARD_MARKDOWN, card_markdown(card).encode())
    config_file = tmp / "model-config.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    released = {k: v for k, v in ckpt.items() if k != "resume"}  # no optimizer state
    atomic_save(released, tmp / CHECKPOINT_FILE)
    export = tmp / "export"
    export.mkdir()
    # The archiver stages files in $TMPDIR/<model name>: a private TMPDIR keeps two builds of
    # the same name (two shells, parallel tests) from mixing their files.
    private_tmp = tmp / "archiver-tmp"
    private_tmp.mkdir()
    command = [
        sys.executable,
        "-m",
        "model_archiver.model_packaging",
        "--model-name",
        name,
        "--version",
        version,
        "--serialized-file",
        str(tmp / CHECKPOINT_FILE),
        "--handler",
        str(HANDLER),
        "--extra-files",
        str(stage),  # a folder: its contents land at the archive root
        "--config-file",
        str(config_file),
        "--export-path",
        str(export),
    ]
    env = {**os.environ, "TMPDIR": str(private_tmp)}
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"error: torch-model-archiver failed:\n{result.stdout}{result.stderr}")
    return export / f"{name}.mar"


def shipped_files() -> list[Path]:
    """The core package's modules; the handler goes to the archive root (--handler), where
    TorchServe looks for it. The check below proves the archive needs nothing else."""
    return sorted(p for p in CORE.rglob("*.py") if "__pycache__" not in p.parts)


def check_archive(mar: Path, ckpt: dict, tolerance: float = 1e-4) -> str:
    """Load the archive as a worker would and predict; raises SystemExit when it misbehaves.

    The served top-1 must be the in-process float32 one, its probability within `tolerance`
    (float rounding; bf16 inference rounds more)."""
    images = {"drawing": sample_png(), "blank": sample_png(blank=True), "garbage": b"no image"}
    try:
        answers, statuses = archive.handle(mar, list(images.values()))
    except archive.ArchiveError as err:
        raise SystemExit(f"error: the archive does not load or predict: {err}") from err
    drawing, blank, garbage = answers
    problems = []
    if statuses != [200, 200, 400] or garbage.get("code") != 400:
        problems.append(f"statuses {statuses}, expected [200, 200, 400]")
    if not blank.get("empty") or blank.get("predictions"):
        problems.append(f"a blank canvas gave {blank}")
    model = model_from_checkpoint(ckpt)
    pixels = preprocess(images["drawing"]).pixels
    with torch.inference_mode():
        logits = model(torch.from_numpy(to_model_input(pixels[np.newaxis])))
    expected = torch.softmax(logits, dim=1)[0].numpy()
    top = int(expected.argmax())
    served = drawing.get("predictions") or [{}]
    if served[0].get("label") != ckpt["class_names"][top]:
        problems.append(f"served {served[0]}, in-process top-1 {ckpt['class_names'][top]}")
    elif abs(served[0]["probability"] - float(expected[top])) > tolerance:
        problems.append(f"served p={served[0]['probability']}, in-process p={expected[top]:.6f}")
    if problems:
        raise SystemExit("error: archive check failed: " + "; ".join(problems))
    return f"archive check passed: top-1 {served[0]['label']} p={served[0]['probability']:.3f}"


def sample_png(*, blank: bool = False) -> bytes:
    """A 280x280 canvas-like PNG: a dark 'T' on white paper (or nothing)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (280, 280), "white")
    if not blank:
        draw = ImageDraw.Draw(image)
        draw.line([(70, 70), (210, 70)], fill="black", width=18)
        draw.line([(140, 70), (140, 220)], fill="black", width=18)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


if __name__ == "__main__":
    main()
