"""Tile encoders: build a backbone by name, save it (safetensors + config.json), load it back.

An *encoder* maps a batch of normalised tiles ``(B, 3, H, W)`` to embeddings ``(B, D)``. Three sources
load the same way through `load_encoder`:

* a folder written by ``domainfm pathology pretrain`` (``model.safetensors`` + ``config.json``);
* a torchvision / timm architecture name (``resnet18``): that architecture with random weights, the
  baseline every comparison needs (seeded, so the baseline is the same every run);
* a local weights file (``.safetensors``, ``.pth``, ``.pt``, ``.bin``): ImageNet weights such as
  torchvision's ``resnet50-0676ba61.pth``, or an upstream MoCo checkpoint. The architecture is read from
  a ``config.json`` beside the file, the ``arch`` argument, or the file name (``resnet50-….pth``).

Nothing is ever downloaded.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domainfm.core.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".tar")
# prefixes that wrap a backbone's keys in common checkpoints (DDP, MoCo upstream, lightly, timm trainers)
_PREFIXES = ("module.", "encoder_q.0.", "encoder_q.", "backbone.", "model.", "encoder.")


@dataclass
class Encoder:
    """A ready-to-use encoder: `model` maps (B, 3, H, W) normalised floats to (B, embed_dim)."""

    model: Any  # torch.nn.Module, in eval mode
    embed_dim: int
    image_size: int
    transform: Any  # PIL.Image -> (3, image_size, image_size) normalised float tensor
    config: dict[str, Any] = field(default_factory=dict)
    name: str = ""


def _torchvision_names() -> set[str]:
    import torchvision

    return set(torchvision.models.list_models(module=torchvision.models))


def build_backbone(arch: str) -> tuple[Any, int]:
    """A headless backbone by torchvision or timm name -> (module (B,3,H,W)->(B,D), D). Random init."""
    import torch.nn as nn

    if arch in _torchvision_names():
        import torchvision

        model = torchvision.models.get_model(arch, weights=None)
        # resnets, resnexts, regnets keep their classifier in `fc`; others in `classifier` / `heads`
        for attr in ("fc", "classifier", "heads", "head"):
            head = getattr(model, attr, None)
            if head is None:
                continue
            if isinstance(head, nn.Linear):
                setattr(model, attr, nn.Identity())
                return model, int(head.in_features)
            # a Sequential head: its FIRST Linear sees the features (mobilenet_v3: Linear(576, 1024) -> ... ->
            # Linear(1024, 1000) gives 576-d). Layers before it that shape the features (convnext's
            # LayerNorm2d + Flatten) are kept, dropout is not; everything from that Linear on goes.
            if not isinstance(head, nn.Sequential):
                continue
            first = next((i for i, m in enumerate(head) if isinstance(m, nn.Linear)), None)
            if first is None:
                continue
            keep = [m for m in list(head)[:first] if not isinstance(m, nn.Dropout)]
            width = int(head[first].in_features)
            setattr(model, attr, nn.Sequential(*keep) if keep else nn.Identity())
            return model, width
        raise UserError(f"torchvision model {arch!r} has no recognisable classifier head; use a timm name")
    try:
        import timm
    except ImportError:  # pragma: no cover - timm is part of the pathology extra
        timm = None
    if timm is not None:
        try:
            model = timm.create_model(arch, pretrained=False, num_classes=0)
        except RuntimeError:
            model = None
        if model is not None:
            return model, int(model.num_features)
    raise UserError(f"unknown architecture {arch!r}: not a torchvision or timm model name "
                    "(e.g. resnet18, resnet50, vit_small_patch16_224)")


def make_transform(image_size: int, mean: tuple[float, ...] = IMAGENET_MEAN,
                   std: tuple[float, ...] = IMAGENET_STD) -> Any:
    """Evaluation transform: resize to `image_size` (square), to tensor, normalise."""
    from torchvision import transforms as T

    return T.Compose([T.Lambda(_to_rgb), T.Resize((image_size, image_size), antialias=True), T.ToTensor(),
                      T.Normalize(mean, std)])


def _to_rgb(img: Any) -> Any:
    return img if img.mode == "RGB" else img.convert("RGB")


def save_encoder(backbone: Any, out_dir: str | Path, *, arch: str, embed_dim: int, image_size: int,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
                 extra: dict[str, Any] | None = None) -> Path:
    """Write `model.safetensors` + `config.json` atomically; returns the folder."""
    from safetensors.torch import save_file

    from domainfm.core.io import atomic_path, atomic_write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "arch": arch})
    config = {"format": "domainfm-encoder", "version": 1, "arch": arch, "embed_dim": int(embed_dim),
              "image_size": int(image_size), "mean": list(mean), "std": list(std), **(extra or {})}
    atomic_write_json(out / CONFIG_NAME, config)
    return out


def _read_state_dict(path: Path) -> dict[str, Any]:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise UserError(f"{path}: cannot read weights ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
                        ) from None
    for key in ("state_dict", "model", "model_state", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise UserError(f"{path}: not a state dict")
    return {k: v for k, v in obj.items() if hasattr(v, "shape")}


def _match_state_dict(model: Any, state: dict[str, Any], source: str) -> dict[str, Any]:
    """Strip wrapper prefixes until the keys fit `model`; every backbone tensor must be present."""
    want = model.state_dict()
    best: dict[str, Any] = {}
    candidates = [state]
    for prefix in _PREFIXES:
        candidates.append({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    for cand in candidates:
        hits = {k: v for k, v in cand.items() if k in want}
        if len(hits) > len(best):
            best = hits
    missing = [k for k in want if k not in best and not k.endswith("num_batches_tracked")]
    if missing:
        raise UserError(f"{source}: weights do not fit this architecture ({len(missing)} tensors missing, "
                        f"e.g. {missing[0]!r})")
    bad = [k for k, v in best.items() if tuple(v.shape) != tuple(want[k].shape)]
    if bad:
        raise UserError(f"{source}: shape mismatch for {bad[0]!r}: {tuple(best[bad[0]].shape)} vs "
                        f"{tuple(want[bad[0]].shape)}")
    return best


def _arch_from_filename(path: Path) -> str | None:
    """torchvision names its files `<arch>-<hash>.pth`; take the longest known name the stem starts with."""
    stem = path.name.split(".")[0].lower()
    names = sorted(_torchvision_names(), key=len, reverse=True)
    for name in names:
        if re.match(rf"^{re.escape(name)}([-_.]|$)", stem):
            return name
    return None


def load_encoder(path_or_name: str | Path, device: str = "cpu", *, arch: str | None = None,
                 image_size: int | None = None, seed: int = 0) -> Encoder:
    """Load an encoder folder, a local weights file, or an architecture name (random init).

    `image_size` overrides the stored input size (names and weight files default to 224).
    """
    import torch

    p = Path(str(path_or_name)).expanduser()
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    extra: dict[str, Any] = {}
    if p.is_dir():
        cfg_path = p / CONFIG_NAME
        if not cfg_path.is_file() or not (p / WEIGHTS_NAME).is_file():
            raise UserError(f"{p}: not an encoder folder (needs {CONFIG_NAME} and {WEIGHTS_NAME}; "
                            "write one with `domainfm pathology pretrain`)")
        try:
            config = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{cfg_path}: not valid JSON ({exc.msg})") from None
        arch = arch or config.get("arch")
        if not arch:
            raise UserError(f"{cfg_path}: no 'arch' key")
        model, dim = build_backbone(arch)
        model.load_state_dict(_match_state_dict(model, _read_state_dict(p / WEIGHTS_NAME), str(p)), strict=False)
        mean, std = tuple(config.get("mean", mean)), tuple(config.get("std", std))
        size = image_size or int(config.get("image_size", 224))
        name = config.get("name") or p.name
        extra_src = {"path": str(p.resolve())}
        extra = {k: v for k, v in config.items() if k not in ("arch", "embed_dim", "image_size", "mean", "std")}
        source = "pretrain"
    elif p.is_file() or p.suffix in WEIGHT_SUFFIXES:
        if not p.is_file():
            raise UserError(f"weights file not found: {p}")
        side = p.parent / CONFIG_NAME
        side_cfg = json.loads(side.read_text()) if side.is_file() else {}
        arch = arch or side_cfg.get("arch") or _arch_from_filename(p)
        if not arch:
            raise UserError(f"{p}: cannot tell the architecture; name the file like 'resnet50-xxxx.pth' or "
                            "pass the architecture (e.g. --arch resnet50)")
        model, dim = build_backbone(arch)
        model.load_state_dict(_match_state_dict(model, _read_state_dict(p), str(p)), strict=False)
        size = image_size or int(side_cfg.get("image_size", 224))
        name = p.stem
        source = "weights-file"
        extra_src = {"path": str(p.resolve())}
    else:
        arch = arch or str(path_or_name)
        if arch.endswith("-random") and arch not in _torchvision_names():
            arch = arch[: -len("-random")]  # the name a random-init encoder reports loads it back
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the random baseline is the same network every run
            model, dim = build_backbone(arch)
        size = image_size or 224
        name = f"{arch}-random"
        source = "random-init"
        extra_src = {"seed": seed}
    model = model.to(device).eval()
    # spec: what to pass to load_encoder (with image_size) to get this encoder back; feature files record it
    spec = extra_src.get("path", arch)
    config = {**extra, "arch": arch, "embed_dim": dim, "image_size": size, "mean": list(mean),
              "std": list(std), "source": source, "name": name, "spec": spec, **extra_src}
    return Encoder(model=model, embed_dim=dim, image_size=size, transform=make_transform(size, mean, std),
                   config=config, name=name)
