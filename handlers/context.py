"""A real TorchServe `Context` without a TorchServe: for handler tests and archive checks.

TorchServe's worker builds the context from the archive's MANIFEST.json and model-config.yaml
and, per batch, one `RequestProcessor` per request (where per-request statuses and headers go).
This does the same in-process, so the handler runs exactly as in a worker.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import ts
from ts.context import Context, RequestProcessor
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
from ts.utils.util import get_yaml_config


def minimal_context(
    model_dir: str | Path,
    manifest: dict[str, Any] | None = None,
    *,
    batch_size: int = 8,
    gpu_id: int | None = None,
) -> Context:
    """The context a worker would give `initialize`; the manifest defaults to the archive's."""
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


def start_batch(context: Context, size: int, headers: list[dict] | None = None) -> Context:
    """Prepare the context for a batch of `size` requests, as the worker does per batch."""
    headers = headers or [{} for _ in range(size)]
    context.request_processor = [RequestProcessor(h) for h in headers]
    context.request_ids = {i: f"request-{i}" for i in range(size)}
    context.metrics.set_request_ids(context.request_ids)
    return context


def response_status(context: Context, idx: int) -> int:
    return context.get_response_status(idx)[0]
