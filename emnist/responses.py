"""The JSON bodies the service answers with: a prediction, a blank drawing, or an error.

Torch-free (probabilities come as a sequence of floats) so the web app can format and test them
the same way. Errors mirror TorchServe's own error bodies (`code`, `type`, `message`) so a client
handles a handler error and a server error alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def prediction(
    probabilities: Sequence[float],
    labels: Sequence[str],
    *,
    model: str,
    version: str,
    topk: int,
    batch_size: int,
) -> dict[str, Any]:
    """The top-k labels by probability; `topk` is capped at the number of classes."""
    if len(probabilities) != len(labels):
        raise ValueError(f"{len(probabilities)} probabilities for {len(labels)} labels")
    k = max(1, min(topk, len(labels)))
    # Stable order for ties: the lower class index first.
    order = sorted(range(len(labels)), key=lambda i: (-probabilities[i], i))[:k]
    return {
        "model": model,
        "version": version,
        "empty": False,
        "predictions": [
            {"label": labels[i], "probability": round(float(probabilities[i]), 6)} for i in order
        ],
        "batch_size": batch_size,
    }


def empty_drawing(*, model: str, version: str, batch_size: int) -> dict[str, Any]:
    """Nothing was drawn: no guess at all rather than a confident guess on a blank canvas."""
    return {
        "model": model,
        "version": version,
        "empty": True,
        "predictions": [],
        "batch_size": batch_size,
    }


def error(status: int, message: str) -> dict[str, Any]:
    """`type` says whose fault it is: the request's (4xx) or the service's."""
    kind = "InvalidInput" if 400 <= status < 500 else "InternalServerError"
    return {"code": status, "type": kind, "message": message}
