"""Batched MoCo augmentations against the published recipe and torchvision's own per-image operations."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from domainfm.pathology.ssl.augment import (
    AUGMENT_PRESETS,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    augment_batch,
    augment_config,
    crop_boxes,
    gaussian_blur,
    geometry_thetas,
)

# facebookresearch/moco main_moco.py @ 010242b77d0ccc6a9b094ad95af127b99f72fe89, `if args.aug_plus:` block
# ("MoCo v2's aug: similar to SimCLR"), written here as data:
#   RandomResizedCrop(224, scale=(0.2, 1.0)); RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8);
#   RandomGrayscale(p=0.2); RandomApply([GaussianBlur([0.1, 2.0])], p=0.5); RandomHorizontalFlip();
#   Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
MOCO_V2_UPSTREAM = {
    "crop_scale": (0.2, 1.0), "crop_ratio": (3 / 4, 4 / 3), "brightness": 0.4, "contrast": 0.4,
    "saturation": 0.4, "hue": 0.1, "color_jitter_p": 0.8, "grayscale_p": 0.2, "blur_sigma": (0.1, 2.0),
    "blur_p": 0.5, "hflip_p": 0.5, "vflip_p": 0.0, "rot90": False, "hed_jitter": 0.0,
    "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
}


def test_mocov2_preset_is_the_upstream_recipe() -> None:
    cfg = AUGMENT_PRESETS.get("mocov2").to_dict()
    for key, value in MOCO_V2_UPSTREAM.items():
        assert cfg[key] == pytest.approx(value), key


def test_histology_preset_differs_where_the_issue_says() -> None:
    h, m = AUGMENT_PRESETS.get("histology"), AUGMENT_PRESETS.get("mocov2")
    assert h.hue < m.hue and h.grayscale_p == 0 and h.hed_jitter > 0
    assert h.rot90 and h.vflip_p == 0.5 and h.hflip_p == 0.5
    assert h.crop_scale == m.crop_scale and h.blur_sigma == m.blur_sigma
    assert augment_config("histology", 64, hue=0.0).hue == 0.0
    assert set(AUGMENT_PRESETS.names()) >= {"mocov2", "histology"}


@pytest.mark.parametrize("op,ref,lo,hi", [
    (adjust_brightness, TF.adjust_brightness, 0.6, 1.4), (adjust_contrast, TF.adjust_contrast, 0.6, 1.4),
    (adjust_saturation, TF.adjust_saturation, 0.6, 1.4), (adjust_hue, TF.adjust_hue, -0.1, 0.1)])
def test_colour_ops_match_torchvision_per_sample(op, ref, lo, hi) -> None:  # noqa: ANN001
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 7, 6, generator=g)
    f = torch.linspace(lo, hi, 5)
    got = op(x.clone(), f)
    for i in range(5):  # each sample with its own factor, torchvision one image at a time
        assert torch.allclose(got[i], ref(x[i], float(f[i])), atol=1e-5), i


def test_crop_boxes_follow_random_resized_crop_law() -> None:
    g = torch.Generator().manual_seed(1)
    b = crop_boxes(g, 4000, 96, 96, (0.2, 1.0), (3 / 4, 4 / 3))
    top, left, h, w = b.unbind(1)
    assert bool(((top >= 0) & (left >= 0) & (top + h <= 96) & (left + w <= 96)).all())
    area = h * w / 96**2
    assert float(area.min()) >= 0.19 and float(area.max()) <= 1.0
    # the same law as torchvision's own sampler (4,000 draws each: means agree to sampling error)
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(0)
    ref = torch.tensor([RandomResizedCrop.get_params(torch.empty(3, 96, 96), [0.2, 1.0], [3 / 4, 4 / 3])
                        for _ in range(4000)], dtype=torch.float64)
    assert abs(float(area.mean()) - float((ref[:, 2] * ref[:, 3] / 96**2).mean())) < 0.02
    assert abs(float(top.mean()) - float(ref[:, 0].mean())) < 1.5
    assert float((w / h).min()) >= 0.73 and float((w / h).max()) <= 1.37  # 3/4..4/3 up to rounding


def test_geometry_equals_crop_resize_flip_rot90() -> None:
    import torch.nn.functional as F

    x = torch.rand(1, 3, 12, 12)
    n = 8
    boxes = torch.tensor([[0.0, 0.0, 12.0, 12.0]]).repeat(n, 1)  # whole tile, same size: an exact resample
    hflip = torch.tensor([0, 1, 0, 0, 1, 0, 1, 1], dtype=torch.bool)
    vflip = torch.tensor([0, 0, 1, 0, 1, 1, 0, 1], dtype=torch.bool)
    rot = torch.tensor([0, 0, 0, 1, 2, 3, 1, 3])
    theta = geometry_thetas(boxes, 12, 12, hflip, vflip, rot).float()
    out = F.grid_sample(x.expand(n, -1, -1, -1), F.affine_grid(theta, [n, 3, 12, 12], align_corners=False),
                        align_corners=False)
    for i in range(n):
        ref = x[0]
        if hflip[i]:
            ref = ref.flip(-1)
        if vflip[i]:
            ref = ref.flip(-2)
        ref = torch.rot90(ref, int(rot[i]), dims=(-2, -1))
        # the rotation's direction is a convention; both directions are in the group, so match either
        alt = torch.rot90(ref, -2 * int(rot[i]), dims=(-2, -1))
        assert torch.allclose(out[i], ref, atol=1e-5) or torch.allclose(out[i], alt, atol=1e-5), i
    # a downscaling crop equals torchvision's resized_crop (bilinear, no antialias)
    box = torch.tensor([[2.0, 1.0, 9.0, 10.0]])
    theta = geometry_thetas(box, 12, 12, torch.tensor([False]), torch.tensor([False]), torch.tensor([0])).float()
    got = F.grid_sample(x, F.affine_grid(theta, [1, 3, 6, 6], align_corners=False), align_corners=False)
    ref = TF.resized_crop(x[0], 2, 1, 9, 10, [6, 6], antialias=False)
    assert torch.allclose(got[0], ref, atol=1e-5)


def test_blur_is_a_normalised_gaussian_per_sample() -> None:
    x = torch.rand(3, 3, 16, 16)
    sig = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    out = gaussian_blur(x, sig)
    for i, s in enumerate(sig.tolist()):
        ref = TF.gaussian_blur(x[i], [2 * 6 + 1] * 2, [s, s])  # the batch radius: ceil(3 x 2.0) = 6
        assert torch.allclose(out[i], ref, atol=1e-5)
    assert torch.allclose(gaussian_blur(torch.full((1, 3, 8, 8), 0.3), sig[:1]), torch.tensor(0.3), atol=1e-6)


def test_augment_batch_shapes_determinism_and_per_sample_randomness() -> None:
    tiles = torch.randint(0, 256, (6, 20, 20, 3), dtype=torch.uint8)
    tiles[:] = tiles[:1]  # six copies of one tile: different views prove per-sample parameters
    cfg = augment_config("histology", 16)
    a = augment_batch(tiles, cfg, torch.Generator().manual_seed(3))
    b = augment_batch(tiles, cfg, torch.Generator().manual_seed(3))
    assert a.shape == (6, 3, 16, 16) and a.dtype == torch.float32
    assert a.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(a, b)  # a pure function of the generator state (exact resume)
    assert all(not torch.allclose(a[0], a[i]) for i in range(1, 6))
    assert torch.isfinite(a).all()
    # mocov2 with every random op off except normalisation = the normalised resized tile
    plain = augment_config("mocov2", 20, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), color_jitter_p=0.0,
                           grayscale_p=0.0, blur_p=0.0, hflip_p=0.0)
    got = augment_batch(tiles[:1], plain, torch.Generator().manual_seed(0))
    ref = TF.normalize(tiles[0].permute(2, 0, 1).float() / 255, list(plain.mean), list(plain.std))
    assert torch.allclose(got[0], ref, atol=1e-5)
