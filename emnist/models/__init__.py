"""The model registry: one name per architecture, used by training, evaluation and serving alike.

Every model takes float images of shape (N, 1, 28, 28) scaled to [0, 1] (see
`emnist.preprocessing.to_model_input`) and returns logits of shape (N, num_classes).
"""

from collections.abc import Callable

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model constructor under `name` (used as `--arch` and stored in checkpoints)."""

    def decorator(constructor: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = constructor
        return constructor

    return decorator


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def build_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; kwargs are the constructor's keyword-only arguments."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    return _REGISTRY[name](**kwargs)


# Importing the architecture modules registers them.
from emnist.models import cnn, rcnn  # noqa: E402, F401
