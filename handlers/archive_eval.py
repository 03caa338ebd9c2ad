"""Run a `.mar` archive's own handler over many EMNIST-format images, as a TorchServe worker would.

`python -m training.evaluate model_store/emnist-cnn-1.0.mar` uses this: the archive is unpacked
into a temporary folder and a separate interpreter, which cannot import anything from the
repository, imports the archive's `emnist_handler`, initialises it with a real TorchServe
`Context` built from the archive's manifest and model-config.yaml, and calls the handler's
`inference` step (model built from the shipped checkpoint, softmax) on the images.

The images are already in EMNIST format, which is what the handler's `preprocess` step produces
from a canvas PNG, so that step is not repeated here: painting test images onto a canvas and
back would measure the canvas round trip (tests/test_roundtrip_accuracy.py does that), not the
model the archive serves. Everything after preprocessing is the archive's own code.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

# Runs inside the unpacked archive. argv: archive root, images.npy, batch size, output .npy,
# GPU index ("" for the CPU).
_EVAL_SCRIPT = """
import json, sys
import numpy as np
root, images_path, batch_size, out_path, gpu = sys.argv[1:6]
batch_size = int(batch_size)
# The editable install would quietly fill in modules the archive lacks: drop it.
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
sys.path.insert(0, root)
import emnist_handler
from handlers.context import minimal_context, start_batch
context = minimal_context(root, batch_size=batch_size, gpu_id=int(gpu) if gpu else None)
handler = emnist_handler.EmnistHandler()
handler.initialize(context)
images = np.load(images_path)
chunks = []
for start in range(0, len(images), batch_size):
    slots = [{"pixels": p, "empty": False, "topk": 3} for p in images[start:start + batch_size]]
    handler.context = start_batch(context, len(slots))
    chunks.append(handler.inference(slots)[1])
probabilities = np.concatenate(chunks) if chunks else np.empty((0, len(handler.labels)))
np.save(out_path, probabilities.astype(np.float32))
outside = sorted(
    getattr(m, "__file__", None) or "" for name, m in list(sys.modules.items())
    if name.split(".")[0] in ("training", "handlers", "emnist_handler")
    and not (getattr(m, "__file__", None) or root).startswith(root)
)
print(json.dumps({"device": str(handler.device), "outside": outside}))
"""


def read_archive_checkpoint(mar: str | os.PathLike) -> dict:
    """The self-describing checkpoint inside an archive (weights_only, like the handler)."""
    with zipfile.ZipFile(mar) as z:
        manifest = json.loads(z.read("MAR-INF/MANIFEST.json"))
        data = z.read(manifest["model"]["serializedFile"])
    ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    ckpt["archive_manifest"] = manifest
    return ckpt


def archive_probabilities(
    mar: str | os.PathLike,
    images: np.ndarray,
    *,
    batch_size: int = 512,
    threads: int | None = None,
    gpu_id: int | None = None,
) -> tuple[np.ndarray, dict]:
    """Class probabilities from the archive's handler for uint8 (N, 28, 28) EMNIST images.

    Returns (probabilities (N, classes), info) where info holds the handler's labels, the
    archive's model name and version, and the device it ran on. `gpu_id` runs the handler on
    that GPU, as TorchServe does when it assigns one to a worker.
    """
    threads = threads or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="emnist-eval-") as tmp:
        tmp = Path(tmp)
        root = tmp / "model"
        with zipfile.ZipFile(mar) as z:
            z.extractall(root)
        np.save(tmp / "images.npy", np.ascontiguousarray(images, dtype=np.uint8))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        # The archive asks for 1 thread per worker (workers share the cores); here one
        # process has the machine to itself.
        env["EMNIST_CPU_THREADS"] = str(threads)
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                _EVAL_SCRIPT,
                str(root),
                str(tmp / "images.npy"),
                str(batch_size),
                str(tmp / "probabilities.npy"),
                "" if gpu_id is None else str(gpu_id),
            ],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise SystemExit(f"error: the archive's handler failed:\n{result.stderr[-3000:]}")
        report = json.loads(result.stdout.splitlines()[-1])
        if report["outside"]:
            raise SystemExit(f"error: the archive imported code from outside: {report['outside']}")
        probabilities = np.load(tmp / "probabilities.npy")
        manifest = json.loads((root / "MAR-INF" / "MANIFEST.json").read_text())
        labels = json.loads((root / "index_to_name.json").read_text())
    info = {
        "model_name": manifest["model"]["modelName"],
        "model_version": manifest["model"].get("modelVersion"),
        "labels": [labels[str(i)] for i in range(len(labels))],
        "device": report["device"],
    }
    return probabilities, info
