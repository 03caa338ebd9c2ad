"""Recurrent convolutional network (RCNN) of Liang & Hu, "Recurrent Convolutional Neural Network
for Object Recognition", CVPR 2015, sized for 28x28 characters.

    conv 5x5 (K) -> norm -> max-pool 3x3/2 -> dropout          28x28 -> 14x14
    RCL (K) -> RCL (K) -> max-pool 3x3/2 -> dropout             14x14 -> 7x7
    RCL (K) -> RCL (K) -> global max-pool -> dropout -> linear  7x7 -> logits

A recurrent convolutional layer (RCL) with input u unrolls `steps` (T) times with weights
shared over time:

    x(0) = g(w_f * u + b)       x(t) = g(w_f * u + w_r * x(t-1) + b),  t = 1..T

The feed-forward term w_f * u + b does not change over time, so it is computed once per RCL
rather than T + 1 times (the same function, at 4 instead of 7 convolutions per RCL for T = 3).
One bias per RCL, as in the paper's equation: a bias on w_r would only duplicate b.

g is the normalised nonlinearity, chosen by `norm`:
- "lrn" (the paper): ReLU, then local response normalisation across channels,
  y_k = r_k / (1 + alpha/N * sum of r^2 over the N channels centred on k) ** beta,
  with N = K/8 + 1, alpha = 0.001, beta = 0.75.
- "bn": batch normalisation, then ReLU. Each unrolled step t has its own BatchNorm2d: the
  statistics of x(0) (feed-forward input only) and of later steps differ, and one shared
  running estimate would fit none of them at evaluation time. The convolutions drop their
  bias, which BN's shift makes redundant.

Pooling is 3x3 with stride 2 (overlapping), as in the paper; padding 1 halves the maps
exactly (28 -> 14 -> 7, as 32 -> 16 -> 8 on the paper's CIFAR-10). Dropout follows each
pooling step, the global one included. With K = 96 (RCNN-96) the model has about 0.67M
parameters, as in the paper. `steps=0` removes the recurrent weights and leaves the
feed-forward network of the same shape.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from emnist.models import register

NORMS = ("lrn", "bn")
LRN_ALPHA = 1e-3
LRN_BETA = 0.75


def lrn_size(channels: int) -> int:
    """The paper's LRN window: N = K/8 + 1 channels."""
    return channels // 8 + 1


def lrn_band(channels: int, size: int, alpha: float) -> torch.Tensor:
    """(C, C) matrix B with (q @ B)[c] = alpha/size * sum of q over c's window.

    The window of channel c is [c - size//2, c + (size-1)//2], clipped to the valid channels,
    which is exactly the window of `torch.nn.LocalResponseNorm(size)`.
    """
    source = torch.arange(channels)[:, None]
    target = torch.arange(channels)[None, :]
    inside = (source >= target - size // 2) & (source <= target + (size - 1) // 2)
    return inside.float() * (alpha / size)


class _ReluLRN(torch.autograd.Function):
    """LRN(ReLU(z)) over channels, computed on channels-last rows with a hand-written backward.

    `nn.LocalResponseNorm` builds the window sum with avg_pool3d on a padded copy of the squared
    input and leaves a chain of pointwise ops to autograd; it was the largest cost of training.
    Here the window sum is one small matmul with a fixed band matrix (faster than a cumulative
    sum over channels when measured), the backward reuses what the forward computed, and a
    channels-last input needs no copies; few, large ops also suffer least on shared cores.
    Equal to `nn.LocalResponseNorm` up to rounding (tests/unit/test_models.py compares outputs and
    gradients, and runs gradcheck).
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, band: torch.Tensor, beta: float) -> torch.Tensor:
        n, c, h, w = z.shape
        rows = z.permute(0, 2, 3, 1).reshape(-1, c)
        if z.dtype == torch.bfloat16:
            r, scale, y, y_over_d = _relu_lrn_bf16(rows, band, beta)
        else:
            # float32 (float64 stays float64 for gradcheck).
            r = torch.relu(rows)
            d = torch.mm(r * r, band.to(z.dtype)).add_(1.0)  # 1 + alpha/N * window sum of r^2
            scale = d.pow(-beta)
            y = r * scale
            y_over_d = y / d  # = r * d^(-beta - 1): all the backward needs of d
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(r, scale, y_over_d, band)
            ctx.beta, ctx.shape = beta, (n, h, w, c)
        return y.view(n, h, w, c).permute(0, 3, 1, 2)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: torch.Tensor):
        r, scale, y_over_d, band = ctx.saved_tensors
        n, h, w, c = ctx.shape
        g = grad_y.to(r.dtype).permute(0, 2, 3, 1).reshape(-1, c)
        # y = r * d^-beta with d = 1 + (r^2) @ band, so
        # dL/dr = g * d^-beta - 2 beta r * ((g * y / d) @ band^T), then the ReLU mask.
        m = torch.mm(g * y_over_d, band.to(r.dtype).t())
        grad_r = g * scale
        grad_r.addcmul_(r, m, value=-2.0 * ctx.beta)
        grad_z = torch.ops.aten.threshold_backward(grad_r, r, 0.0)  # ReLU's own backward
        return grad_z.view(n, h, w, c).permute(0, 3, 1, 2), None, None


def _relu_lrn_bf16(rows: torch.Tensor, band: torch.Tensor, beta: float):
    """The same function on bfloat16 rows, for bf16 autocast: no float32 copies of activations.

    d = 1 + s with s = alpha/N * window sum of r^2 is within a few percent of 1, and bfloat16
    (8 significant bits) cannot hold 1 + s finely enough for d^-beta: s itself can. So the
    scale is exp(-beta * log1p(s)), exact in real numbers and accurate to bfloat16's rounding
    here; the window sum is a bf16 matrix product (float32 accumulation inside oneDNN).
    """
    r = torch.relu(rows)
    s = torch.mm(r * r, band.to(torch.bfloat16))
    log_d = torch.log1p(s)
    scale = torch.exp(log_d * -beta)
    y = r * scale
    y_over_d = y * torch.exp(-log_d)
    return r, scale, y, y_over_d


class ReluLRN(nn.Module):
    """ReLU followed by the paper's local response normalisation (no parameters)."""

    def __init__(self, channels: int, *, alpha: float = LRN_ALPHA, beta: float = LRN_BETA):
        super().__init__()
        assert channels > 0, f"channels must be positive, got {channels}"
        self.size, self.alpha, self.beta = lrn_size(channels), alpha, beta
        # Not persistent: derived from the constructor arguments, so not part of checkpoints.
        self.register_buffer("band", lrn_band(channels, self.size, alpha), persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _ReluLRN.apply(z, self.band, self.beta)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}"


class BatchNormReLU(nn.BatchNorm2d):
    """Batch normalisation, then ReLU."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # In place is safe: BN's backward needs its input and statistics, not its output.
        return F.relu(super().forward(z), inplace=True)


def make_norm(norm: str, channels: int) -> nn.Module:
    return ReluLRN(channels) if norm == "lrn" else BatchNormReLU(channels)


class RecurrentConv(nn.Module):
    """One RCL: a 3x3 feed-forward and a 3x3 recurrent convolution, unrolled `steps` times."""

    def __init__(self, channels: int, *, steps: int, norm: str):
        super().__init__()
        self.steps = steps
        self.feedforward = nn.Conv2d(channels, channels, 3, padding=1, bias=norm == "lrn")
        self.recurrent = (
            nn.Conv2d(channels, channels, 3, padding=1, bias=False) if steps > 0 else None
        )
        self.norms = nn.ModuleList(make_norm(norm, channels) for _ in range(steps + 1))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        drive = self.feedforward(u)  # w_f * u + b: the same at every step
        x = self.norms[0](drive)
        for t in range(1, self.steps + 1):
            # In place on the fresh conv output (its backward does not need it): one less tensor.
            x = self.norms[t](self.recurrent(x).add_(drive))
        return x


@register("rcnn")
class RCNN(nn.Module):
    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 1,
        width: int = 96,
        steps: int = 3,
        norm: str = "lrn",
        dropout: float = 0.5,
    ):
        super().__init__()
        assert num_classes >= 2, f"num_classes must be at least 2, got {num_classes}"
        assert in_channels >= 1, f"in_channels must be positive, got {in_channels}"
        assert width >= 8, f"width (K) must be at least 8 for an LRN window, got {width}"
        assert steps >= 0, f"steps must be non-negative, got {steps}"
        assert norm in NORMS, f"norm must be one of {NORMS}, got {norm!r}"
        assert 0.0 <= dropout < 1.0, f"dropout must be in [0, 1), got {dropout}"
        self.stem = nn.Conv2d(in_channels, width, 5, padding=2, bias=norm == "lrn")
        self.stem_norm = make_norm(norm, width)
        self.rcl1 = RecurrentConv(width, steps=steps, norm=norm)
        self.rcl2 = RecurrentConv(width, steps=steps, norm=norm)
        self.rcl3 = RecurrentConv(width, steps=steps, norm=norm)
        self.rcl4 = RecurrentConv(width, steps=steps, norm=norm)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(width, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # He initialisation for ReLU convolutions, and a small classifier so that the first
        # logits are near zero: with PyTorch's default (variance a third of He's) the signal
        # fades through the 17 unrolled convolution layers of the LRN variant, which then
        # barely trains; with He alone the global max-pool features give initial losses of 17.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.pool(self.stem_norm(self.stem(x))))
        x = self.dropout(self.pool(self.rcl2(self.rcl1(x))))
        x = self.rcl4(self.rcl3(x))
        x = self.dropout(torch.amax(x, dim=(2, 3)))  # global max pooling
        return self.classifier(x)
