"""Checkpoint -> `model_store/<name>-<version>.mar`, checked before it lands in the store.

    python -m handlers.archive runs/cnn-emnist47-s0/best.pt --version 1.0

The archive holds the checkpoint itself (loaded with `weights_only=True` and rebuilt through the
registry: no pickled modules, no `--model-file`), `index_to_name.json` written from the
checkpoint's label map, the model card (`model-card.json`, `MODEL_CARD.md`: data, protocol,
accuracy, parameters, training time and hardware; handlers/model_card.py), a
`model-config.yaml` (workers, batching, timeouts, CPU threads), the handler, and the project
modules the handler imports (`handlers/`, `training/`) exactly as they are in the repository,
found by importing the handler in a fresh interpreter.

The check runs the archive's own copy of the code, in a separate interpreter where nothing else
can be imported from the repository, on a batch of [a drawing, a blank canvas, garbage], and
compares the drawing's probabilities with the repository's in-process prediction.
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
import zipfile
from pathlib import Path

import yaml

from handlers.model_card import (
    CARD_JSON,
    CARD_MARKDOWN,
    build_card,
    card_markdown,
    check_test_metrics,
)
from training.checkpoint import atomic_save, load_checkpoint
from training.files import atomic_write, atomic_write_json
from training.preprocessing import PREPROCESSING_VERSION

ROOT = Path(__file__).resolve().parent.parent
HANDLER = ROOT / "handlers" / "emnist_handler.py"
# Shipped although the handler does not import it: the archive check (and anyone debugging an
# extracted archive) builds a context with it.
EXTRA_MODULES = ("handlers.context",)
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
        "handler": {"cpu_threads": args.cpu_threads},
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
            print(check_archive(mar, ckpt))
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
        prog="python -m handlers.archive",
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
    parser.add_argument("--workers", type=int, default=1, help="workers per model version")
    parser.add_argument("--batch-size", type=int, default=8, help="most requests per batch")
    parser.add_argument(
        "--max-batch-delay", type=int, default=1, help="ms to wait for a batch to fill up"
    )
    parser.add_argument(
        "--response-timeout", type=int, default=30, help="s before a worker is deemed stuck"
    )
    parser.add_argument("--cpu-threads", type=int, default=1, help="torch threads per worker")
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
        parser.error("--max-batch-delay must be >= 0")
    return args


def build_archive(ckpt: dict, name: str, version: str, config: dict, card: dict, tmp: Path) -> Path:
    """Stage everything in `tmp` and run torch-model-archiver; returns the .mar path."""
    stage = tmp / "stage"
    for module_file in shipped_files():
        dest = stage / module_file.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(module_file, dest)
    atomic_write_json(stage / "index_to_name.json", dict(enumerate(ckpt["class_names"])))
    atomic_write_json(stage / CARD_JSON, card)
    atomic_write(stage / CARD_MARKDOWN, card_markdown(card).encode())
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
    """The project files the handler imports, found by importing it in a fresh interpreter."""
    modules = ["handlers.emnist_handler", *EXTRA_MODULES]
    script = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps([getattr(m, '__file__', None) for m in list(sys.modules.values())]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"error: the handler does not import:\n{result.stderr}")
    files = {Path(f).resolve() for f in json.loads(result.stdout.splitlines()[-1]) if f}
    packages = (ROOT / "training", ROOT / "handlers")
    shipped = sorted(f for f in files if any(f.is_relative_to(p) for p in packages))
    # The handler itself goes to the archive root (--handler), where TorchServe looks for it.
    return [f for f in shipped if f != HANDLER]


# Runs in the extracted archive with the repository unreachable: prints the handler's answers.
_CHECK_SCRIPT = """
import json, sys
root = sys.argv[1]
# The editable install would quietly fill in modules the archive lacks: drop it.
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
sys.path.insert(0, root)
import emnist_handler
from handlers.context import minimal_context, response_status, start_batch
context = minimal_context(root)
handler = emnist_handler.EmnistHandler()
handler.initialize(context)
batch = [{"body": open(p, "rb").read()} for p in sys.argv[2:]]
answers = handler.handle(batch, start_batch(context, len(batch)))
outside = sorted(
    getattr(m, "__file__", None) for name, m in list(sys.modules.items())
    if name.split(".")[0] in ("training", "handlers", "emnist_handler")
    and not (getattr(m, "__file__", None) or root).startswith(root)
)
statuses = [response_status(context, i) for i in range(len(batch))]
print(json.dumps({"answers": answers, "statuses": statuses, "outside": outside}))
"""


def check_archive(mar: Path, ckpt: dict) -> str:
    """Load the archive as a worker would and predict; raises SystemExit when it misbehaves."""
    import numpy as np
    import torch

    from training.checkpoint import model_from_checkpoint
    from training.preprocessing import preprocess, to_model_input

    with tempfile.TemporaryDirectory(prefix="emnist-check-") as tmp:
        tmp = Path(tmp)
        root = tmp / "model"
        with zipfile.ZipFile(mar) as z:
            z.extractall(root)
        images = {"drawing": sample_png(), "blank": sample_png(blank=True), "garbage": b"no image"}
        for key, data in images.items():
            (tmp / key).write_bytes(data)
        paths = [str(tmp / key) for key in images]
        result = subprocess.run(
            [sys.executable, "-c", _CHECK_SCRIPT, str(root), *paths],
            cwd=root,
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            capture_output=True,
            text=True,
        )
    if result.returncode != 0:
        raise SystemExit(f"error: the archive does not load or predict:\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout.splitlines()[-1])
    drawing, blank, garbage = report["answers"]
    problems = []
    if report["outside"]:
        problems.append(f"modules imported from outside the archive: {report['outside']}")
    if report["statuses"] != [200, 200, 400] or garbage.get("code") != 400:
        problems.append(f"statuses {report['statuses']}, expected [200, 200, 400]")
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
    elif abs(served[0]["probability"] - float(expected[top])) > 1e-4:
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
