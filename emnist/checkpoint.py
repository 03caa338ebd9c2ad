"""Self-describing checkpoints: everything needed to rebuild, label and serve a model.

A checkpoint holds plain Python values and tensors only, so it loads with
`torch.load(..., weights_only=True)` and the model registry, and nothing else.
"""

import io
import os
from typing import Any

import torch
from torch import nn

from emnist.files import atomic_write
from emnist.models import build_model
from emnist.preprocessing import PREPROCESSING_VERSION

FORMAT = "emnist-serve-checkpoint/1"
REQUIRED_KEYS = ("format", "arch", "model_args", "state_dict", "class_names")


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save that never leaves a half-written checkpoint behind (see emnist.files)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getvalue())


def make_checkpoint(
    *,
    model: nn.Module,
    arch: str,
    model_args: dict,
    class_names: list[str],
    train_config: dict,
    data: dict,
    metrics: dict,
    history: list[dict],
    extra: dict | None = None,
) -> dict:
    """The released form of a model; `extra` carries resume state (optimizer, RNG)."""
    state_dict = {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()}
    ckpt = {
        "format": FORMAT,
        "arch": arch,
        "model_args": dict(model_args),
        "state_dict": state_dict,
        "class_names": list(class_names),
        "preprocessing_version": PREPROCESSING_VERSION,
        "train_config": train_config,
        "data": data,
        "metrics": metrics,
        "history": history,
        "torch_version": str(torch.__version__),
    }
    ckpt.update(extra or {})
    return ckpt


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module behind a `torch.compile` wrapper (its state dict keys are prefixed)."""
    return getattr(model, "_orig_mod", model)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load and validate a checkpoint; raises ValueError with the reason if it is not one."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise ValueError(f"{path} is not a readable checkpoint: {exc}") from exc
    missing = [k for k in REQUIRED_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ValueError(f"{path} is not an emnist-serve checkpoint (missing {missing})")
    if ckpt["format"] != FORMAT:
        raise ValueError(f"{path}: unsupported checkpoint format {ckpt['format']!r}")
    return ckpt


def model_from_checkpoint(ckpt: dict, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model through the registry, load its weights and put it in eval mode."""
    model = build_model(ckpt["arch"], **ckpt["model_args"])
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval()
