"""Histopathology domain (MoCo v2 + MIL): slides, ssl, features, mil."""


def load_encoder(path: str, device: str = "cpu", **kwargs):  # noqa: ANN201, ANN003 - returns an Encoder
    """Load an encoder: a folder written by `domainfm pathology pretrain`, a torchvision / timm architecture
    name (random init, the baseline) or a local weights file. Keyword arguments (`arch`, `image_size`,
    `seed`, ...) go to `domainfm.pathology.features.encoders.load_encoder`."""
    from domainfm.pathology.features.encoders import load_encoder as _load

    return _load(path, device=device, **kwargs)
