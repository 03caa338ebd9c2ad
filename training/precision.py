"""Training precision: bfloat16 autocast where the hardware runs it fast, float32 elsewhere.

`--precision auto` (the default) picks bf16 on a GPU that supports it and on a CPU with native
bfloat16 dot products: Intel's AMX (amx_bf16, Sapphire Rapids and later) or AVX-512 BF16
(amx-less Intel Cooper Lake, AMD Zen 4 and later), which oneDNN uses for convolutions and
matrix products. Elsewhere bf16 is emulated and slower than float32, so auto picks fp32.

Only the arithmetic of the forward and backward passes changes: under autocast the weights,
their gradients and the optimizer state stay float32, and the loss is computed in float32.
The checkpoint records the precision a run used (`train_config["precision"]`).
"""

from __future__ import annotations

import torch

from emnist import hardware

CHOICES = ("auto", "fp32", "bf16")
BF16_CPU_FLAGS = hardware.BF16_CPU_FLAGS


def resolve(choice: str, device: torch.device) -> str:
    """`auto` -> "bf16" or "fp32" for `device`; an explicit choice is kept."""
    if choice not in CHOICES:
        raise ValueError(f"precision must be one of {CHOICES}, got {choice!r}")
    if choice != "auto":
        return choice
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if hardware.cpu_bf16_native() else "fp32"
    return "fp32"


def why(precision: str, device: torch.device) -> str:
    """One line for the log: what runs and why."""
    if device.type == "cpu":
        found = [f for f in BF16_CPU_FLAGS if f in hardware.cpu_flags()]
        native = f"native bf16 ({', '.join(found)})" if found else "no native bf16 on this CPU"
        return f"precision {precision} ({native})"
    return f"precision {precision}"


def autocast(precision: str, device: torch.device):
    """The autocast context of a training step or a validation pass."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
