"""Per-slide feature files in our, CLAM's and TRIDENT's layouts: find them, read them, write CLAM's pair.

Layouts (one file per slide, named by slide id):

* ours / TRIDENT: ``DIR/<slide_id>.h5`` with datasets ``features`` (N, D) and ``coords`` (N, 2, level-0
  top-left corners); the coordinates' patching attributes sit on the ``coords`` dataset (TRIDENT's
  ``extract_patch_features`` copies them there). TRIDENT's job folder nests them as
  ``JOB/<mag>x_<size>px_<overlap>px_overlap/features_<encoder>/<slide_id>.h5``; either folder works.
* CLAM (``extract_features_fp.py``): ``DIR/h5_files/<slide_id>.h5`` (``features`` + ``coords``) and
  ``DIR/pt_files/<slide_id>.pt`` (the features alone, a ``torch.save``d (N, D) tensor, which is what
  CLAM's ``Generic_MIL_Dataset`` trains on). The ``.h5`` is preferred (it has the coordinates).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from domainfm.core.errors import UserError
from domainfm.pathology.slides.coords import plain_attr


@dataclass
class SlideFeatures:
    features: np.ndarray  # (N, D) float32
    coords: np.ndarray | None  # (N, 2) int64 level-0 top-left, None for a CLAM .pt file
    attrs: dict[str, Any] = field(default_factory=dict)  # root attrs updated with the coords dataset's
    layout: str = ""  # "h5" or "clam-pt"


def _trident_dirs(d: Path) -> list[Path]:
    """`features_<encoder>` folders directly in `d` or one level down (a TRIDENT job folder)."""
    found = sorted(p for p in d.glob("features_*") if p.is_dir())
    found += sorted(p for p in d.glob("*/features_*") if p.is_dir())
    return found


def feature_dirs(features_dir: str | os.PathLike[str]) -> list[Path]:
    """The folders that hold per-slide files, in preference order, for any of the three layouts."""
    d = Path(features_dir)
    if not d.is_dir():
        raise UserError(f"features folder not found: {d}")
    dirs = [d, d / "features", d / "h5_files"]
    trident = _trident_dirs(d)
    if len(trident) > 1:
        raise UserError(f"{d} holds features of several encoders ({', '.join(p.name for p in trident)}); "
                        "pass one of those folders")
    dirs += trident + [d / "pt_files"]
    return [x for x in dirs if x.is_dir()]


def find_feature_file(features_dir: str | os.PathLike[str], slide_id: str) -> Path | None:
    """`<slide_id>.h5` in the first layout folder that has it, else CLAM's `pt_files/<slide_id>.pt`."""
    for d in feature_dirs(features_dir):
        for ext in (".h5", ".pt"):
            cand = d / f"{slide_id}{ext}"
            if cand.is_file():
                return cand
    return None


def list_feature_files(features_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """{slide_id: file} over the layout folders; an `.h5` wins over CLAM's `.pt` of the same slide."""
    out: dict[str, Path] = {}
    for d in feature_dirs(features_dir):
        for f in sorted(d.glob("*.h5")) + sorted(d.glob("*.pt")):
            out.setdefault(f.stem, f)
    return out


def read_feature_file(path: str | os.PathLike[str]) -> SlideFeatures:
    """Read one slide's features (+ coords and attributes) from any of the layouts; `UserError` if unreadable."""
    p = Path(path)
    if p.suffix == ".pt":
        import torch

        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a bad file is a user error with its reason
            raise UserError(f"{p}: cannot read ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
        if isinstance(obj, dict):  # some forks save {"features": tensor, "coords": tensor}
            coords = obj.get("coords")
            obj = obj.get("features", obj.get("feats"))
        else:
            coords = None
        if not hasattr(obj, "shape"):
            raise UserError(f"{p}: not a features tensor")
        x = np.asarray(obj.float().numpy() if hasattr(obj, "numpy") else obj, dtype=np.float32)
        c = None if coords is None else np.asarray(coords).astype(np.int64).reshape(-1, 2)
        return SlideFeatures(x.reshape(len(x), -1) if x.ndim != 2 else x, c, {}, "clam-pt")
    import h5py

    try:
        with h5py.File(p, "r") as f:
            if "features" not in f:
                raise UserError(f"{p}: no 'features' dataset")
            x = np.asarray(f["features"][()], dtype=np.float32)
            c = np.asarray(f["coords"][()]).astype(np.int64).reshape(-1, 2) if "coords" in f else None
            attrs = {k: plain_attr(v) for k, v in f.attrs.items()}
            if "coords" in f:
                attrs.update({k: plain_attr(v) for k, v in f["coords"].attrs.items()})
    except (OSError, ValueError, TypeError) as exc:  # ValueError/TypeError: a 'features' of strings or compounds
        raise UserError(f"{p}: not a readable HDF5 file ({exc})") from None
    if x.ndim == 3 and x.shape[0] == 1:  # (1, N, D) as some slide pipelines store a bag
        x = x[0]
    if c is not None and x.ndim == 2 and len(c) != len(x):
        raise UserError(f"{p}: {len(x)} feature rows but {len(c)} coordinates")
    attrs.setdefault("level0_tile_size", _level0_size(attrs))
    if attrs["level0_tile_size"] is None:
        attrs.pop("level0_tile_size")
    return SlideFeatures(x, c, attrs, "h5")


def _level0_size(a: dict[str, Any]) -> float | None:
    """Tile width in level-0 px from TRIDENT's, CLAM's or our attribute names, when they say it."""
    if "patch_size_level0" in a:
        return float(a["patch_size_level0"])
    if "patch_size" in a and "level0_magnification" in a and "target_magnification" in a:
        return float(a["patch_size"]) * float(a["level0_magnification"]) / float(a["target_magnification"])
    if "patch_size" in a and "downsample" in a:
        return float(a["patch_size"]) * float(np.ravel(a["downsample"])[0])
    return None


def write_clam_pair(out_dir: str | os.PathLike[str], slide_id: str, features: np.ndarray, coords: np.ndarray,
                    coords_attrs: dict[str, Any] | None = None, root_attrs: dict[str, Any] | None = None
                    ) -> tuple[Path, Path]:
    """CLAM's feature layout: `h5_files/<id>.h5` (features, coords) + `pt_files/<id>.pt` (features tensor)."""
    import h5py
    import torch

    from domainfm.core.io import atomic_path

    out = Path(out_dir)
    (out / "h5_files").mkdir(parents=True, exist_ok=True)
    (out / "pt_files").mkdir(parents=True, exist_ok=True)
    h5p, ptp = out / "h5_files" / f"{slide_id}.h5", out / "pt_files" / f"{slide_id}.pt"
    with atomic_path(h5p) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("features", data=np.asarray(features, dtype=np.float32))
        d = f.create_dataset("coords", data=np.asarray(coords, dtype=np.int64).reshape(-1, 2))
        d.attrs.update(coords_attrs or {})
        f.attrs.update(root_attrs or {})
    with atomic_path(ptp) as tmp:
        torch.save(torch.from_numpy(np.asarray(features, dtype=np.float32)), tmp)
    return h5p, ptp
