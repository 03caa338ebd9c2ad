"""Batched in-process inference and the accuracy figures shared by training and evaluation."""

import numpy as np
import torch
from torch import nn

from emnist.preprocessing import to_model_input


def select_device(name: str = "auto") -> torch.device:
    """`auto` picks the GPU when there is one; otherwise the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name} asked for, but torch sees no CUDA device")
    return device


def images_to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (N, 28, 28) EMNIST-format images to the float batch models take, on `device`."""
    return torch.from_numpy(to_model_input(images)).to(device)


@torch.inference_mode()
def predict_logits(
    model: nn.Module, inputs: torch.Tensor, *, batch_size: int = 1024, amp: bool = False
) -> torch.Tensor:
    """Logits for a float batch already on the model's device, computed in chunks."""
    model.eval()
    chunks = []
    for start in range(0, len(inputs), batch_size):
        with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=amp):
            chunks.append(model(inputs[start : start + batch_size]).float())
    if not chunks:
        return torch.empty(0, 0)
    return torch.cat(chunks)


def accuracy_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Cross-entropy loss, top-1 and top-3 accuracy (fractions, not percentages)."""
    labels = labels.to(logits.device)
    loss = nn.functional.cross_entropy(logits, labels).item()
    k = min(3, logits.shape[1])
    topk = logits.topk(k, dim=1).indices
    top1 = (topk[:, 0] == labels).float().mean().item()
    top3 = (topk == labels[:, None]).any(dim=1).float().mean().item()
    return {"loss": loss, "acc": top1, "top3": top3}
