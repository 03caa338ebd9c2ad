"""Read a `.mar` model archive and run its own handler, as a TorchServe worker would.

Reading: `manifest`, `read_member`, `read_json`, `labels` and `checkpoint` know where
an archive keeps what (MAR-INF/MANIFEST.json, the serialized checkpoint it names, the label map,
the model card): nobody else hard-codes member names.

Running: `handle`, `preprocess`, `probabilities` and `time_handler` unpack the archive into a
temporary folder and start `mar/worker.py` in a separate interpreter (`python -I`, the editable
install dropped) that can import nothing from the repository. It imports the archive's
`emnist_handler`, initialises it with a real TorchServe `Context` built from the archive's
manifest and model-config.yaml, and runs the handler's own steps. A run that imported any
handler code from outside the archive fails: that would hide a file the archive lacks.

`python -m training.evaluate model_store/emnist-cnn-1.2.mar` evaluates through `probabilities`:
the images are already in EMNIST format, which is what the handler's `preprocess` step makes of
a canvas PNG, so that step is not repeated (painting test images onto a canvas and back would
measure the canvas round trip, not the model the archive serves).
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "MAR-INF/MANIFEST.json"
LABELS = "index_to_name.json"
CARD_JSON = "model-card.json"
CARD_MARKDOWN = "MODEL_CARD.md"
CONFIG = "model-config.yaml"
HANDLER_MODULE = "emnist_handler.py"
WORKER = Path(__file__).resolve().with_name("worker.py")


class ArchiveError(Exception):
    """The archive is unreadable, or its handler failed; the message says which and why."""


def read_member(mar: str | os.PathLike, name: str) -> bytes:
    try:
        with zipfile.ZipFile(mar) as z:
            return z.read(name)
    except (OSError, KeyError, zipfile.BadZipFile) as err:
        raise ArchiveError(f"{mar}: cannot read {name}: {err}") from err


def read_json(mar: str | os.PathLike, name: str) -> Any:
    try:
        return json.loads(read_member(mar, name))
    except ValueError as err:
        raise ArchiveError(f"{mar}: {name} is not JSON: {err}") from err


def manifest(mar: str | os.PathLike) -> dict:
    """The `model` part of MAR-INF/MANIFEST.json: modelName, modelVersion, serializedFile..."""
    try:
        return read_json(mar, MANIFEST)["model"]
    except (KeyError, TypeError) as err:
        raise ArchiveError(f"{mar}: {MANIFEST} has no model entry") from err


def members(mar: str | os.PathLike) -> list[str]:
    with zipfile.ZipFile(mar) as z:
        return z.namelist()


def labels(mar: str | os.PathLike) -> list[str]:
    """The class names by index, from the archive's index_to_name.json."""
    names = read_json(mar, LABELS)
    return [str(names[str(i)]) for i in range(len(names))]


def checkpoint(mar: str | os.PathLike) -> dict:
    """The self-describing checkpoint inside an archive (weights_only, as the handler loads it),
    with the archive's manifest under `archive_manifest`."""
    import torch

    model = manifest(mar)
    data = read_member(mar, model["serializedFile"])
    ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    ckpt["archive_manifest"] = read_json(mar, MANIFEST)
    return ckpt


def _run(
    mar: str | os.PathLike,
    task: str,
    write_input,
    *,
    batch_size: int = 8,
    threads: int | None = None,
    gpu_id: int | None = None,
    precision: str | None = None,
) -> tuple[Path, dict, tempfile.TemporaryDirectory]:
    """Run one worker task; returns (output file, the worker's report, the folder holding it)."""
    work = tempfile.TemporaryDirectory(prefix="emnist-run-")
    tmp = Path(work.name)
    try:
        with zipfile.ZipFile(mar) as z:
            z.extractall(tmp / "model")
    except (OSError, zipfile.BadZipFile) as err:
        work.cleanup()
        raise ArchiveError(f"{mar}: not a readable archive: {err}") from err
    source = write_input(tmp)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["EMNIST_EVAL_BATCH"] = str(batch_size)
    env["EMNIST_EVAL_GPU"] = "" if gpu_id is None else str(gpu_id)
    if threads is not None:
        env["EMNIST_CPU_THREADS"] = str(threads)  # read by the handler, over model-config.yaml
    if precision is not None:
        env["EMNIST_PRECISION"] = precision  # likewise (archives that predate it ignore it)
    root, out = tmp / "model", tmp / "output"
    command = [sys.executable, "-I", str(WORKER), str(root), task, str(source), str(out)]
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        work.cleanup()
        raise ArchiveError(f"{mar}: the archive's handler failed:\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout.splitlines()[-1])
    if report["outside"]:
        work.cleanup()
        raise ArchiveError(f"{mar}: the handler imported code from outside: {report['outside']}")
    return out, report, work


def _bodies_input(bodies: Sequence[bytes], **extra):
    def write(tmp: Path) -> Path:
        spec = {"bodies": [base64.b64encode(b).decode() for b in bodies], **extra}
        (tmp / "input.json").write_text(json.dumps(spec))
        return tmp / "input.json"

    return write


def handle(
    mar: str | os.PathLike, bodies: Sequence[bytes], headers: Sequence[dict] | None = None
) -> tuple[list[dict], list[int]]:
    """One batch of raw request bodies through the handler: (answers, HTTP statuses)."""
    write = _bodies_input(bodies, headers=list(headers) if headers else None)
    out, _, work = _run(mar, "handle", write, batch_size=max(1, len(bodies)))
    with work:
        result = json.loads(out.read_text())
    return result["answers"], result["statuses"]


def preprocess(mar: str | os.PathLike, bodies: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Image files through the handler's own decoding and preprocessing: uint8 (N, 28, 28)
    pixels and a blank flag per image. Raises ArchiveError when the handler refuses one."""
    out, _, work = _run(mar, "preprocess", _bodies_input(bodies), batch_size=max(1, len(bodies)))
    with work, np.load(f"{out}.npz") as data:
        return data["pixels"], data["empty"]


def probabilities(
    mar: str | os.PathLike,
    images: np.ndarray,
    *,
    batch_size: int = 512,
    threads: int | None = None,
    gpu_id: int | None = None,
    precision: str | None = None,
) -> tuple[np.ndarray, dict]:
    """Class probabilities from the handler's inference for uint8 (N, 28, 28) EMNIST images.

    Returns (probabilities (N, classes), info) with the handler's labels, the archive's model name
    and version, and the device it ran on. `threads` defaults to every core (the archive asks for
    1 per worker because workers share the cores; here one process has the machine to itself);
    `gpu_id` runs the handler on that GPU, as TorchServe does when it assigns one to a worker.
    """

    def write(tmp: Path) -> Path:
        np.save(tmp / "images.npy", np.ascontiguousarray(images, dtype=np.uint8))
        return tmp / "images.npy"

    threads = threads or os.cpu_count() or 1
    out, report, work = _run(
        mar,
        "probabilities",
        write,
        batch_size=batch_size,
        threads=threads,
        gpu_id=gpu_id,
        precision=precision,
    )
    with work:
        result = np.load(f"{out}.npy")
    model = manifest(mar)
    info = {
        "model_name": model["modelName"],
        "model_version": model.get("modelVersion"),
        "labels": report["labels"],
        "device": report["device"],
        "precision": report.get("precision", "fp32"),
    }
    return result, info


def time_handler(
    mar: str | os.PathLike,
    bodies: Sequence[bytes],
    batches: Sequence[int],
    seconds: float,
    *,
    threads: int | None = None,
    precision: str | None = None,
) -> dict:
    """The handler's own `handle` on batches of these requests, in-process, for `seconds` per
    batch size: images/s, per-image latency and each phase's share (no HTTP, no frontend)."""
    write = _bodies_input(bodies, batches=list(batches), seconds=seconds)
    out, _, work = _run(
        mar, "time", write, batch_size=max(batches), threads=threads, precision=precision
    )
    with work:
        return json.loads(out.read_text())
