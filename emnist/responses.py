"""The JSON bodies the service answers with: a prediction, an empty drawing, or an error.

Torch-free (probabilities come as a sequence of floats) so the web app can format and test them
the same way. Errors mirror TorchServe's own error bodies (`code`, `type`, `message`) so a client
handles a handler error and a server error alike.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np

from emnist.charsets import DEFAULT_CHARSET, allows, assess, restrict
from emnist.preprocessing import IMAGE_SIZE, emnist_to_upright, upright_to_emnist

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


def model_input(pixels: np.ndarray, *, extent: float, dot: bool) -> dict[str, Any]:
    """What the model read, for a client that shows it (the web app's preview): `pixels` is the
    28x28 uint8 picture upright, row by row, white ink on black, in base64 (784 bytes);
    `extent` and `dot` are `Preprocessed`'s (emnist/preprocessing.py)."""
    upright = np.ascontiguousarray(emnist_to_upright(pixels), dtype=np.uint8)
    return {
        "pixels": base64.b64encode(upright.tobytes()).decode("ascii"),
        "size": list(upright.shape),
        "extent": round(float(extent), 4),
        "dot": bool(dot),
    }


def input_pixels(answer_input: dict[str, Any]) -> np.ndarray:
    """`model_input`'s pixels back as uint8 (28, 28), EMNIST orientation; ValueError if bad."""
    try:
        data = base64.b64decode(answer_input["pixels"], validate=True)
        shape = tuple(int(n) for n in answer_input["size"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"not a model input: {err}") from err
    if shape != (IMAGE_SIZE, IMAGE_SIZE) or len(data) != IMAGE_SIZE * IMAGE_SIZE:
        raise ValueError(f"not a 28x28 model input: size {shape}, {len(data)} bytes")
    return upright_to_emnist(np.frombuffer(data, dtype=np.uint8).reshape(shape))
