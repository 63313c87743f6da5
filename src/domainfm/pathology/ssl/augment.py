"""MoCo v2 augmentations plus histology options (vertical flips, 90-degree rotations, HED stain jitter).

HED jitter (Tellez et al. 2018) perturbs each stain's optical density: colour deconvolution (Ruifrok &
Johnston 2001) maps RGB to Haematoxylin/Eosin/DAB concentrations, each channel becomes
``s * a + b`` with ``a ~ U(1-sigma, 1+sigma)``, ``b ~ U(-sigma, sigma)``, and the result is recombined
into RGB. `rgb_to_hed` / `hed_to_rgb` follow scikit-image's `rgb2hed` / `hed2rgb` (same stain matrix,
same log compensation), in torch so they run on a (3, H, W) tensor without a numpy round trip.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import torch

# rows: the RGB optical-density vectors of haematoxylin, eosin and DAB (Ruifrok & Johnston 2001)
RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float64)
HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)
_EPS = 1e-6
_LOG_ADJUST = math.log(_EPS)  # compensates the clamp at _EPS so white maps to zero stain


def rgb_to_hed(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> (..., 3, H, W) stain concentrations (>= 0)."""
    x = rgb.clamp_min(_EPS).log() / _LOG_ADJUST  # optical density scaled so that 1e-6 -> 1
    m = HED_FROM_RGB.to(dtype=rgb.dtype, device=rgb.device)
    stains = torch.einsum("...chw,cd->...dhw", x, m)
    return stains.clamp_min(0)


def hed_to_rgb(hed: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) stain concentrations -> (..., 3, H, W) RGB in [0, 1]."""
    m = RGB_FROM_HED.to(dtype=hed.dtype, device=hed.device)
    log_rgb = torch.einsum("...chw,cd->...dhw", hed * _LOG_ADJUST, m)
    return log_rgb.exp().clamp(0, 1)


class HEDJitter:
    """Random stain jitter on a (3, H, W) RGB tensor in [0, 1]; `sigma` = 0 is the identity."""

    def __init__(self, sigma: float = 0.05) -> None:
        self.sigma = sigma

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.sigma <= 0:
            return img
        s = self.sigma
        alpha = torch.empty(3, 1, 1).uniform_(1 - s, 1 + s)
        beta = torch.empty(3, 1, 1).uniform_(-s, s)
        hed = rgb_to_hed(img.double())
        return hed_to_rgb(hed * alpha.double() + beta.double()).to(img.dtype)


class RandomRot90:
    """Rotate by a uniformly drawn multiple of 90 degrees (tissue has no canonical orientation)."""

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        k = int(torch.randint(0, 4, ()).item())
        return torch.rot90(img, k, dims=(-2, -1)) if k else img


class GaussianBlurPIL:
    """MoCo v2's blur: PIL GaussianBlur with radius ~ U(sigma_min, sigma_max)."""

    def __init__(self, sigma: tuple[float, float]) -> None:
        self.sigma = sigma

    def __call__(self, img: Any) -> Any:
        from PIL import ImageFilter

        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


@dataclass
class AugmentConfig:
    image_size: int = 96
    crop_scale_min: float = 0.2  # MoCo v2: RandomResizedCrop scale (0.2, 1)
    color_jitter: float = 0.4  # brightness/contrast/saturation = s, hue = s / 4 (0.4/0.4/0.4/0.1)
    color_jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    vflip: bool = True
    rot90: bool = True
    hed_jitter: float = 0.05  # 0 disables
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)


def moco_v2_transform(cfg: AugmentConfig) -> Any:
    """PIL image -> augmented, normalised (3, S, S) tensor: one view of the MoCo v2 pipeline."""
    from torchvision import transforms as T

    s = cfg.color_jitter
    # MoCo v2 blurs 224-px crops with sigma in [0.1, 2]; smaller tiles get the same blur relative to size
    scale = cfg.image_size / 224
    ops: list[Any] = [T.RandomResizedCrop(cfg.image_size, scale=(cfg.crop_scale_min, 1.0), antialias=True)]
    if s > 0 and cfg.color_jitter_p > 0:
        ops.append(T.RandomApply([T.ColorJitter(s, s, s, s / 4)], p=cfg.color_jitter_p))
    if cfg.grayscale_p > 0:
        ops.append(T.RandomGrayscale(p=cfg.grayscale_p))
    if cfg.blur_p > 0:
        ops.append(T.RandomApply([GaussianBlurPIL((0.1 * scale, 2.0 * scale))], p=cfg.blur_p))
    ops.append(T.RandomHorizontalFlip())
    if cfg.vflip:
        ops.append(T.RandomVerticalFlip())
    ops.append(T.ToTensor())
    if cfg.rot90:
        ops.append(RandomRot90())
    if cfg.hed_jitter > 0:
        ops.append(HEDJitter(cfg.hed_jitter))
    ops.append(T.Normalize(cfg.mean, cfg.std))
    return T.Compose(ops)


class TwoCrops:
    """Two independent views of one image: the query and the key."""

    def __init__(self, transform: Any) -> None:
        self.transform = transform

    def __call__(self, img: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(img), self.transform(img)
