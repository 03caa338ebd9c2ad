"""Batched data augmentation as tensor ops, so it runs wherever the batch lives (CPU or GPU).

One affine matrix per image (rotation, scale, shear, translation) and, optionally, a smooth
elastic displacement field; both are applied in a single `grid_sample` call. All ranges are
symmetric, so it does not matter that EMNIST images are stored transposed.
"""

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    rotation_deg: float = 12.0
    scale: tuple[float, float] = (0.85, 1.1)
    shear: float = 0.2  # tangent of the shear angle
    translate_px: float = 2.5
    elastic_alpha_px: float = 0.0  # 0 disables the elastic field
    elastic_grid: int = 4  # control points per side: larger means wigglier strokes

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    "none": None,
    "affine": AugmentConfig(),
    "elastic": AugmentConfig(elastic_alpha_px=1.5),
}


def random_affine_matrices(n: int, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) matrices in `affine_grid`'s normalised coordinates (output -> input)."""

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=generator) * (high - low) + low

    angle = uniform(-cfg.rotation_deg, cfg.rotation_deg) * (math.pi / 180.0)
    # Sampling scale log-uniformly keeps shrinking and growing equally likely.
    scale = torch.exp(uniform(math.log(cfg.scale[0]), math.log(cfg.scale[1])))
    shear = uniform(-cfg.shear, cfg.shear)
    # 28 px span the normalised range [-1, 1], so one pixel is 2/28.
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (cfg.translate_px * 2 / 28)

    cos, sin = torch.cos(angle), torch.sin(angle)
    # Inverse map for grid_sample: rotate, shear and divide by the scale.
    a = torch.stack([cos, -sin + shear * cos, sin, cos + shear * sin], dim=1).view(n, 2, 2)
    a = a / scale.view(n, 1, 1)
    return torch.cat([a, shift.unsqueeze(2)], dim=2)


def augment_batch(
    images: torch.Tensor, cfg: AugmentConfig | None, generator: torch.Generator
) -> torch.Tensor:
    """Randomly transform a float batch (N, 1, H, W); `generator` is a CPU generator.

    Random parameters are drawn on the CPU (a few numbers per image) so that a run is
    reproducible from its seed whichever device does the warping.
    """
    if cfg is None:
        return images
    n, _, h, w = images.shape
    theta = random_affine_matrices(n, cfg, generator).to(images.device, images.dtype)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    if cfg.elastic_alpha_px > 0:
        k = cfg.elastic_grid
        coarse = (torch.rand(n, 2, k, k, generator=generator) * 2 - 1).to(images.device)
        # Bicubic upsampling of a coarse random field gives a smooth displacement.
        field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
        grid = grid + field.permute(0, 2, 3, 1).to(images.dtype) * (cfg.elastic_alpha_px * 2 / w)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
