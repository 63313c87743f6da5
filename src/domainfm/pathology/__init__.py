"""Histopathology domain (MoCo v2 + MIL): slides, ssl, features, mil."""


def load_encoder(path: str, device: str = "cpu"):  # noqa: ANN201 - returns domainfm.pathology.features.Encoder
    """Load an encoder folder written by `domainfm pathology pretrain` (or a local weights file)."""
    from domainfm.pathology.features.encoders import load_encoder as _load

    return _load(path, device=device)
