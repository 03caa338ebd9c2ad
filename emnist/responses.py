"""The JSON bodies the service answers with: a prediction, an empty drawing, or an error.

Torch-free (probabilities come as a sequence of floats) so the web app can format and test them
the same way. Errors mirror TorchServe's own error bodies (`code`, `type`, `message`) so a client
handles a handler error and a server error alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from emnist.charsets import DEFAULT_CHARSET, allows, assess, restrict

# A drawing whose ink spans less than this share of the canvas side gets the "small" hint.
SMALL_EXTENT = 0.3


def prediction(
    probabilities: Sequence[float],
    labels: Sequence[str],
    *,
    model: str,
    version: str,
    topk: int,
    batch_size: int,
    charset: str = DEFAULT_CHARSET,
    extent: float | None = None,
) -> dict[str, Any]:
    """The top-k labels by probability over the classes `charset` allows (renormalised), with
    how sure the answer is (`confidence`, emnist/charsets.py) and a `hint` when the drawing is
    small. `topk` is capped at the number of classes. Raises CharsetError when the model has no
    class for `charset`."""
    if len(probabilities) != len(labels):
        raise ValueError(f"{len(probabilities)} probabilities for {len(labels)} labels")
    probabilities = restrict(probabilities, labels, charset)
    allowed = [i for i, label in enumerate(labels) if allows(label, charset)]
    # Stable order for ties: the lower class index first.
    order = sorted(allowed, key=lambda i: (-probabilities[i], i))
    ranked = [{"label": labels[i], "probability": round(float(probabilities[i]), 6)} for i in order]
    k = max(1, min(topk, len(ranked)))
    return {
        "model": model,
        "version": version,
        "empty": False,
        "charset": charset,
        "predictions": ranked[:k],
        "confidence": assess(ranked),
        "hint": hint(extent),
        "batch_size": batch_size,
    }


def hint(extent: float | None) -> str | None:
    """`"small"` when the drawing fills little of the canvas: it may be read as a blob."""
    return "small" if extent is not None and extent < SMALL_EXTENT else None


def empty_drawing(
    *, model: str, version: str, batch_size: int, reason: str = "blank"
) -> dict[str, Any]:
    """Nothing was drawn (`blank`), or only a dot (`dot`): no guess at all rather than a
    confident guess at nothing."""
    return {
        "model": model,
        "version": version,
        "empty": True,
        "empty_reason": reason,
        "predictions": [],
        "batch_size": batch_size,
    }


def error(status: int, message: str) -> dict[str, Any]:
    """`type` says whose fault it is: the request's (4xx) or the service's."""
    kind = "InvalidInput" if 400 <= status < 500 else "InternalServerError"
    return {"code": status, "type": kind, "message": message}
