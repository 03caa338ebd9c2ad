"""Runs inside a clean interpreter, in an unpacked archive: the archive's own handler at work.

    python -I mar/worker.py <archive root> <task> <input> <output>

`mar.archive` starts it with `-I` (no script folder, no PYTHONPATH, no user site) and drops the
editable install's finder, so the only project code this process can import is the archive's:
its `emnist_handler.py` and the packages beside it. It imports nothing of the project itself.

Tasks (input and output are files):
- `handle`: JSON requests (base64 bodies, headers) -> the handler's answers and HTTP statuses;
- `preprocess`: JSON base64 image bodies -> `.npz` of the handler's 28x28 pixels and blank flags;
- `probabilities`: `.npy` uint8 (N, 28, 28) images -> `.npy` softmax probabilities;
- `time`: JSON (bodies, batch sizes, seconds) -> JSON per batch: images/s, per-phase times.

`minimal_context` and `start_batch` also give in-process handler tests a real TorchServe
`Context`, built from an archive's MANIFEST.json and model-config.yaml as a worker builds it.
"""

from __future__ import annotations

import base64
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# Modules an archive holds: the handler and the core (new archives), or the handler, `handlers/`
# and `training/` (archives built before the core package existed).
ARCHIVE_PACKAGES = ("emnist_handler", "emnist", "handlers", "training")


def minimal_context(
    model_dir: str | Path,
    manifest: dict[str, Any] | None = None,
    *,
    batch_size: int = 8,
    gpu_id: int | None = None,
):
    """The context a worker would give `initialize`; the manifest defaults to the archive's."""
    import ts
    from ts.context import Context
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
    from ts.utils.util import get_yaml_config

    model_dir = Path(model_dir)
    if manifest is None:
        manifest = json.loads((model_dir / "MAR-INF" / "MANIFEST.json").read_text())
    config_file = manifest["model"].get("configFile")
    yaml_config = get_yaml_config(str(model_dir / config_file)) if config_file else {}
    metrics = MetricsCacheYamlImpl(
        config_file_path=os.path.join(os.path.dirname(ts.__file__), "configs", "metrics.yaml")
    )
    metrics.initialize_cache()
    return Context(
        manifest["model"]["modelName"],
        str(model_dir),
        manifest,
        batch_size,
        gpu_id,
        ts.__version__,
        metrics=metrics,
        model_yaml_config=yaml_config,
    )


def start_batch(context, size: int, headers: list[dict] | None = None):
    """Prepare the context for a batch of `size` requests, as the worker does per batch."""
    from ts.context import RequestProcessor

    headers = headers or [{} for _ in range(size)]
    context.request_processor = [RequestProcessor(h) for h in headers]
    context.request_ids = {i: f"request-{i}" for i in range(size)}
    context.metrics.set_request_ids(context.request_ids)
    return context


def response_status(context, idx: int) -> int:
    return context.get_response_status(idx)[0]


def _handler(root: str, batch_size: int, gpu: str):
    import emnist_handler

    context = minimal_context(root, batch_size=batch_size, gpu_id=int(gpu) if gpu else None)
    handler = emnist_handler.EmnistHandler()
    handler.initialize(context)
    return handler, context


def _bodies(spec: dict) -> list[bytes]:
    return [base64.b64decode(b) for b in spec["bodies"]]


def task_handle(handler, context, spec: dict, out: str) -> None:
    batch = [{"body": body} for body in _bodies(spec)]
    headers = spec.get("headers") or [{} for _ in batch]
    answers = handler.handle(batch, start_batch(context, len(batch), headers))
    statuses = [response_status(context, i) for i in range(len(batch))]
    Path(out).write_text(json.dumps({"answers": answers, "statuses": statuses}))


def task_preprocess(handler, context, spec: dict, out: str) -> None:
    import numpy as np

    bodies = _bodies(spec)
    handler.context = start_batch(context, len(bodies))
    slots = handler.preprocess([{"body": body} for body in bodies])
    errors = [(i, s["error"]) for i, s in enumerate(slots) if "error" in s]
    if errors:
        raise SystemExit(f"the handler refused {len(errors)} image(s), first: {errors[0]}")
    pixels = np.stack([s["pixels"] for s in slots]) if slots else np.empty((0, 28, 28), np.uint8)
    np.savez(out, pixels=pixels, empty=np.array([s["empty"] for s in slots], dtype=bool))


def task_probabilities(handler, context, images_path: str, out: str, batch_size: int) -> None:
    import numpy as np

    images = np.load(images_path)
    chunks = []
    for start in range(0, len(images), batch_size):
        slots = [
            {"pixels": p, "empty": False, "topk": 3} for p in images[start : start + batch_size]
        ]
        handler.context = start_batch(context, len(slots))
        chunks.append(handler.inference(slots)[1])
    probabilities = np.concatenate(chunks) if chunks else np.empty((0, len(handler.labels)))
    np.save(out, probabilities.astype(np.float32))


def task_time(handler, context, spec: dict, out: str) -> None:
    """`handle` on batches of the given requests for `seconds` each: the in-process limit."""
    import torch

    rows = [{"body": body} for body in _bodies(spec)]
    results = [_time_batch(handler, context, rows, b, spec["seconds"]) for b in spec["batches"]]
    Path(out).write_text(json.dumps({"threads": torch.get_num_threads(), "results": results}))


def _time_batch(handler, context, rows: list[dict], batch: int, seconds: float) -> dict:
    headers = [{"content-type": "image/png"}] * batch
    requests = [rows[i % len(rows)] for i in range(batch)]
    for _ in range(3):  # warm-up: first calls allocate and pick kernels
        handler.handle(requests, start_batch(context, batch, headers))
    timings: dict[str, list[float]] = {"preprocess": [], "inference": [], "postprocess": []}
    for phase, values in timings.items():
        original = getattr(handler, phase)

        def timed(*args, _original=original, _values=values, **kwargs):
            start = time.perf_counter()
            result = _original(*args, **kwargs)
            _values.append(time.perf_counter() - start)
            return result

        setattr(handler, phase, timed)
    latencies = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start_batch(context, batch, headers)
        start = time.perf_counter()
        answers = handler.handle(requests, context)
        latencies.append(time.perf_counter() - start)
        assert len(answers) == batch and all("predictions" in a for a in answers), answers
    for phase in timings:
        delattr(handler, phase)  # back to the class's methods
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


def imported_from_outside(root: str) -> list[str]:
    """Archive modules that did not come from the archive (which would hide a missing file)."""
    return sorted(
        getattr(m, "__file__", None) or name
        for name, m in list(sys.modules.items())
        if name.split(".")[0] in ARCHIVE_PACKAGES
        and not (getattr(m, "__file__", None) or root).startswith(root)
    )


def main(argv: list[str]) -> None:
    root, task, source, out = argv[:4]
    batch_size = int(os.environ.get("EMNIST_EVAL_BATCH", "8"))
    # The editable install would quietly fill in modules the archive lacks: drop it.
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
    sys.path.insert(0, root)
    handler, context = _handler(root, batch_size, os.environ.get("EMNIST_EVAL_GPU", ""))
    if task == "probabilities":
        task_probabilities(handler, context, source, out, batch_size)
    else:
        spec = json.loads(Path(source).read_text())
        {"handle": task_handle, "preprocess": task_preprocess, "time": task_time}[task](
            handler, context, spec, out
        )
    precision = getattr(handler, "precision", "fp32")  # archives before 2.0 compute in fp32
    report = {"device": str(handler.device), "labels": handler.labels, "precision": precision}
    print(json.dumps({**report, "outside": imported_from_outside(root)}))


if __name__ == "__main__":
    main(sys.argv[1:])
