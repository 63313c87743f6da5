"""MoCo v2 augmentations on whole batches of uint8 tiles, with per-sample random parameters.

Two presets (a registry, `AUGMENT_PRESETS`):

- ``mocov2``: the ImageNet recipe of facebookresearch/moco ``main_moco.py --aug-plus``:
  RandomResizedCrop scale (0.2, 1), ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale p 0.2,
  Gaussian blur sigma in [0.1, 2.0] (at 224 px) with p 0.5, horizontal flip p 0.5.
- ``histology``: the same crop and blur, a weaker colour jitter (saturation 0.2, hue 0.02: stain hue carries
  the signal), no grayscale (H&E is defined by its two colours), HED stain jitter (Tellez et al. 2018),
  horizontal and vertical flips and the four 90-degree rotations (tissue has no canonical orientation).

`augment_batch` takes ``(B, H, W, 3)`` uint8 (the memory-mapped tile cache's layout) and returns
``(B, 3, S, S)`` float32, normalised, channels_last, on the requested device. Every random draw comes from
one CPU `torch.Generator`, so a batch is a pure function of (pixels, generator state) on any device: that is
what makes resume exact. Order per sample: crop + resize + flips + rotation (one `grid_sample`), colour
jitter (brightness / contrast / saturation / hue in a random order per sample, as torchvision's
ColorJitter), grayscale, blur, HED jitter, normalisation. The colour operations follow torchvision's
formulas (checked per sample against `torchvision.transforms.v2.functional` in the tests). The crop is
resampled bilinearly without antialiasing (as torchvision's tensor path did before 0.17); at PCam's
96 -> 64 px the largest downscale is 1.5x.

HED jitter (Tellez et al. 2018) perturbs each stain's optical density: colour deconvolution (Ruifrok &
Johnston 2001) maps RGB to Haematoxylin/Eosin/DAB concentrations, each channel becomes
``s * a + b`` with ``a ~ U(1-sigma, 1+sigma)``, ``b ~ U(-sigma, sigma)``, and the result is recombined
into RGB. `rgb_to_hed` / `hed_to_rgb` follow scikit-image's `rgb2hed` / `hed2rgb`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from domainfm.core.registry import Registry

# rows: the RGB optical-density vectors of haematoxylin, eosin and DAB (Ruifrok & Johnston 2001)
RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float64)
HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)
_EPS = 1e-6
_LOG_ADJUST = math.log(_EPS)  # compensates the clamp at _EPS so white maps to zero stain
_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights (ITU-R 601-2 luma)


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


@dataclass(frozen=True)
class AugmentConfig:
    """One view's augmentation; a preset fills it, single fields may be overridden (`with_overrides`)."""

    preset: str = "histology"
    image_size: int = 96
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    color_jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # at 224 px; scaled by image_size / 224
    hflip_p: float = 0.5
    vflip_p: float = 0.0
    rot90: bool = False
    hed_jitter: float = 0.0  # sigma; 0 disables
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


AUGMENT_PRESETS: Registry[AugmentConfig] = Registry("augmentation preset")
AUGMENT_PRESETS.register("mocov2", AugmentConfig(preset="mocov2"),
                         help="ImageNet MoCo v2 recipe (facebookresearch/moco main_moco.py --aug-plus)")
AUGMENT_PRESETS.register("histology", AugmentConfig(
    preset="histology", saturation=0.2, hue=0.02, grayscale_p=0.0, vflip_p=0.5, rot90=True, hed_jitter=0.05),
    help="H&E: weaker saturation/hue jitter, no grayscale, HED stain jitter, flips and 90-degree rotations")


def augment_config(preset: str, image_size: int, **overrides: Any) -> AugmentConfig:
    """The named preset at `image_size`, with the non-None `overrides` (field name -> value) applied."""
    base = AUGMENT_PRESETS.get(preset)
    return replace(base, image_size=image_size, **{k: v for k, v in overrides.items() if v is not None})


# ---------------------------------------------------------------- batched operations (B, 3, H, W) in [0, 1]

def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64).mul_(hi - lo).add_(lo)


def crop_boxes(g: torch.Generator, n: int, h: int, w: int, scale: tuple[float, float],
               ratio: tuple[float, float]) -> torch.Tensor:
    """RandomResizedCrop.get_params for `n` samples at once -> (n, 4) float64 boxes (top, left, height, width).

    Same law as torchvision: up to 10 tries of area ~ U(scale) x H x W and log-uniform aspect ratio, the first
    crop that fits wins; if none fits, the whole image clamped to the ratio range (the central crop)."""
    tries = 10
    area = h * w * (torch.rand(n, tries, generator=g, dtype=torch.float64) * (scale[1] - scale[0]) + scale[0])
    log_r = (torch.rand(n, tries, generator=g, dtype=torch.float64) * (math.log(ratio[1]) - math.log(ratio[0]))
             + math.log(ratio[0]))
    ar = log_r.exp()
    cw = torch.sqrt(area * ar).round()
    ch = torch.sqrt(area / ar).round()
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = torch.where(ok.any(1), ok.double().argmax(1), torch.full((n,), -1, dtype=torch.long))
    u_top = torch.rand(n, generator=g, dtype=torch.float64)
    u_left = torch.rand(n, generator=g, dtype=torch.float64)
    rows = torch.arange(n)
    bh, bw = ch[rows, first.clamp_min(0)], cw[rows, first.clamp_min(0)]
    # fallback: central crop with the aspect ratio clamped to the range
    in_ratio = w / h
    if in_ratio < ratio[0]:
        fw, fh = w, round(w / ratio[0])
    elif in_ratio > ratio[1]:
        fh, fw = h, round(h * ratio[1])
    else:
        fw, fh = w, h
    miss = first < 0
    bh = torch.where(miss, torch.full_like(bh, fh), bh)
    bw = torch.where(miss, torch.full_like(bw, fw), bw)
    top = torch.floor(u_top * (h - bh + 1))  # torch.randint(0, h - bh + 1) per sample
    left = torch.floor(u_left * (w - bw + 1))
    top = torch.where(miss, torch.full_like(top, 0.0) + ((h - bh) // 2), top)
    left = torch.where(miss, torch.full_like(left, 0.0) + ((w - bw) // 2), left)
    return torch.stack([top, left, bh, bw], dim=1)


def geometry_thetas(boxes: torch.Tensor, h: int, w: int, hflip: torch.Tensor, vflip: torch.Tensor,
                    rot: torch.Tensor) -> torch.Tensor:
    """(n, 2, 3) affine maps for `F.affine_grid`: output square -> crop box, with flips and k x 90 degrees.

    Output coordinates (u, v) in [-1, 1]^2 are flipped / rotated first (a symmetry of the square), then scaled
    and shifted onto the box, so the result equals resize(crop) followed by the flips and the rotation."""
    n = boxes.shape[0]
    top, left, bh, bw = boxes.unbind(1)
    m = torch.eye(2, dtype=torch.float64).repeat(n, 1, 1)
    m[:, 0, 0] = torch.where(hflip, -1.0, 1.0)
    m[:, 1, 1] = torch.where(vflip, -1.0, 1.0)
    r90 = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    rots = torch.stack([torch.linalg.matrix_power(r90, k) for k in range(4)])  # (4, 2, 2)
    m = rots[rot] @ m
    s = torch.stack([bw / w, bh / h], dim=1)  # half-extent of the box in normalised input coordinates
    c = torch.stack([(left + bw / 2) / w * 2 - 1, (top + bh / 2) / h * 2 - 1], dim=1)
    theta = torch.empty(n, 2, 3, dtype=torch.float64)
    theta[:, :, :2] = s.unsqueeze(2) * m
    theta[:, :, 2] = c
    return theta


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)  # (n, 1, H, W)


def _blend(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """torchvision's _blend: clamp(f * a + (1 - f) * b) with a per-sample factor f (n,)."""
    f = f.view(-1, 1, 1, 1).to(a.dtype)
    return (f * a + (1 - f) * b).clamp_(0, 1)


def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, torch.zeros_like(x), f)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, _gray(x).mean(dim=(-3, -2, -1), keepdim=True), f)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, _gray(x), f)


def adjust_hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Shift the hue by f (n,) in [-0.5, 0.5] turns: RGB -> HSV -> RGB (torchvision's tensor formulas)."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_div = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / cr_div, (maxc - g) / cr_div, (maxc - b) / cr_div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    h6 = torch.remainder(h + f.view(-1, 1, 1).to(x.dtype), 1.0) * 6.0
    # HSV -> RGB without the 6-way piecewise stack: channel_n = v - v s clamp(min(k, 4 - k), 0, 1) with
    # k = (n + 6h) mod 6, n = 5, 3, 1 for R, G, B (the same values as torchvision's piecewise form)
    vs = maxc * s
    out = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(h6 + n, 6.0)
        out.append(maxc - vs * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0))
    return torch.stack(out, dim=1).clamp_(0.0, 1.0)


_COLOR_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample sigma (n,), reflect padding, radius ceil(3 sigma_max)."""
    n, _, h, w = x.shape
    radius = max(1, min(int(math.ceil(3 * float(sigma.max()))), min(h, w) - 1))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t.view(1, -1) / sigma.view(-1, 1)) ** 2)
    k = (k / k.sum(1, keepdim=True)).to(x.dtype).to(x.device)  # (n, 2r+1)
    taps = k.view(n, 1, 1, 1, -1).unbind(-1)  # 2r+1 per-sample weights (n, 1, 1, 1)
    y = F.pad(x, (radius, radius, radius, radius), mode="reflect")  # (n, c, h + 2r, w + 2r)
    # separable: a weighted sum of shifted views along W, then along H (cheaper than a grouped
    # convolution with one tiny kernel per sample and channel)
    y = sum(t * y[..., j:j + w] for j, t in enumerate(taps))  # (n, c, h + 2r, w)
    return sum(t * y[..., j:j + h, :] for j, t in enumerate(taps))  # (n, c, h, w)


def _apply_subset(x: torch.Tensor, idx: torch.Tensor, fn: Any, *args: torch.Tensor) -> torch.Tensor:
    """x[idx] = fn(x[idx], *args) for a (possibly empty) index set; returns x."""
    if idx.numel() == 0:
        return x
    dev_idx = idx.to(x.device)
    x[dev_idx] = fn(x[dev_idx], *args)
    return x


def augment_batch(tiles: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator,
                  device: str | torch.device = "cpu") -> torch.Tensor:
    """(B, H, W, 3) uint8 tiles -> one augmented view (B, 3, S, S) float32, normalised, channels_last.

    ~300 small operations: on the CPU run them on one intra-op thread (`ViewPrefetcher` does, on its own
    thread): with two threads under load each small parallel region waits for a descheduled thread
    (measured 0.07 s vs 0.5-1.5 s of wall time per 64-view batch)."""
    g = generator
    n, h, w, _ = tiles.shape
    size = cfg.image_size
    x = tiles.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)  # (n, 3, H, W)
    # geometry: crop box, flips, rotation -> one bilinear resample (n, 3, S, S)
    boxes = crop_boxes(g, n, h, w, cfg.crop_scale, cfg.crop_ratio)
    hflip = torch.rand(n, generator=g) < cfg.hflip_p
    vflip = torch.rand(n, generator=g) < cfg.vflip_p
    rot = torch.randint(0, 4, (n,), generator=g) if cfg.rot90 else torch.zeros(n, dtype=torch.long)
    theta = geometry_thetas(boxes, h, w, hflip, vflip, rot).to(device=device, dtype=torch.float32)
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False).clamp_(0, 1)
    # colour jitter with probability p; the four operations in a random order per sample
    jitter = torch.rand(n, generator=g) < cfg.color_jitter_p
    factors = torch.stack([_uniform(g, n, max(0.0, 1 - cfg.brightness), 1 + cfg.brightness),
                           _uniform(g, n, max(0.0, 1 - cfg.contrast), 1 + cfg.contrast),
                           _uniform(g, n, max(0.0, 1 - cfg.saturation), 1 + cfg.saturation),
                           _uniform(g, n, -cfg.hue, cfg.hue)], dim=1)  # (n, 4)
    order = torch.argsort(torch.rand(n, 4, generator=g), dim=1)  # per-sample permutation of the 4 ops
    strengths = (cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
    for r in range(4):
        for o, fn in enumerate(_COLOR_OPS):
            if strengths[o] <= 0:
                continue
            idx = torch.nonzero(jitter & (order[:, r] == o)).flatten()
            x = _apply_subset(x, idx, fn, factors[idx, o].to(device))
    gray = torch.rand(n, generator=g) < cfg.grayscale_p
    if cfg.grayscale_p > 0:
        x = _apply_subset(x, torch.nonzero(gray).flatten(), lambda t: _gray(t).expand(-1, 3, -1, -1).clone())
    blur = torch.rand(n, generator=g) < cfg.blur_p
    sig_scale = size / 224  # MoCo v2 blurs 224-px crops; smaller crops get the same blur relative to size
    sigma = _uniform(g, n, cfg.blur_sigma[0] * sig_scale, cfg.blur_sigma[1] * sig_scale)
    if cfg.blur_p > 0:
        idx = torch.nonzero(blur).flatten()
        x = _apply_subset(x, idx, gaussian_blur, sigma[idx])
    if cfg.hed_jitter > 0:
        s = cfg.hed_jitter
        alpha = (torch.rand(n, 3, 1, 1, generator=g) * 2 * s + 1 - s).to(device)
        beta = (torch.rand(n, 3, 1, 1, generator=g) * 2 * s - s).to(device)
        x = hed_to_rgb(rgb_to_hed(x) * alpha + beta)
    mean = torch.tensor(cfg.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, device=device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)
