"""Tile encoders: build a backbone by name, save it (safetensors + config.json), load it back.

An *encoder* maps a batch of normalised tiles ``(B, 3, H, W)`` to embeddings ``(B, D)``. These sources
load the same way through `load_encoder`:

* a folder written by ``domainfm pathology pretrain`` (``model.safetensors`` + ``config.json``);
* a Hugging Face image model saved in a local folder with ``save_pretrained`` (``config.json`` with a
  ``model_type``, as Phikon and other public histology models are distributed): loaded with
  ``transformers.AutoModel.from_pretrained(folder, local_files_only=True)``; the embedding is the CLS
  token of ``last_hidden_state`` (what Phikon's model card uses), mean/std from ``preprocessor_config.json``;
* a torchvision / timm architecture name (``resnet18``): that architecture with random weights, the
  baseline every comparison needs (seeded, so the baseline is the same every run);
* a local weights file (``.safetensors``, ``.pth``, ``.pt``, ``.bin``, ``.pth.tar``, ``.ckpt``) in any of
  the common key layouts: torchvision / timm state dicts (``conv1.weight``, ``fc.weight``), DDP
  (``module.``), facebookresearch/moco (``state_dict`` with ``module.encoder_q.*`` and
  ``module.encoder_k.*``, MLP head ``module.encoder_q.fc.0/fc.2``: the query encoder is taken, as MoCo's
  ``main_lincls.py`` does), lightly (``backbone.<i>.*`` -- an ``nn.Sequential`` of the ResNet's children --
  next to ``backbone_momentum.*`` and ``projection_head.*``; Lightning's ``state_dict`` wrapper). The
  backbone's prefix is found in one pass over every split point of every key (not by stripping prefixes
  one at a time), momentum/key encoders lose ties, and the classifier / projection head is dropped
  because the headless backbone has no such keys. timm architectures load plain timm state dicts with
  timm's own loader (``pretrained_cfg_overlay=dict(file=...)``, head removed by ``num_classes=0``).
  The architecture is read from a ``config.json`` beside the file, the ``arch`` argument, or the file
  name (``resnet50-….pth``).

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
# a prefix naming the momentum / key copy of a backbone: it loses a tie against the query / online copy
_MOMENTUM_HINTS = ("encoder_k", "momentum", "key_encoder", "teacher", "_ema", "model_ema")


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
        hint = ""
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            # e.g. a Lightning checkpoint whose hyper_parameters hold Python objects: we never unpickle code
            hint = ("; it holds Python objects besides tensors -- if you trust it, re-save its weights: "
                    "torch.save(torch.load(f, weights_only=False)['state_dict'], 'weights.pth')")
        first = re.sub(r"\x1b\[[0-9;]*m", "", str(exc).splitlines()[0])[:160]  # torch bolds part of it
        raise UserError(f"{path}: cannot read weights ({type(exc).__name__}: {first}){hint}") from None
    # checkpoint wrappers: MoCo / Lightning `state_dict`, DeiT / timm trainers `model`, others
    for key in ("state_dict", "model", "model_state", "model_state_dict", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise UserError(f"{path}: not a state dict")
    return {k: v for k, v in obj.items() if hasattr(v, "shape")}


def _candidates(model: Any, state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{prefix: {model key: tensor}} for every prefix after which checkpoint keys name model tensors.

    Each key is split at its start and after every dot (``module.encoder_q.layer1.0.conv1.weight`` ->
    prefixes ``""``, ``module.``, ``module.encoder_q.``, ...). A rest that starts with a child *index*
    (lightly's ``nn.Sequential(*resnet.children())``: ``4.0.conv1.weight``) is renamed to the child's name
    (``layer1.0.conv1.weight``); such prefixes are marked with a trailing ``#``."""
    want = model.state_dict()
    by_index = {str(i): name for i, (name, _) in enumerate(model.named_children())}
    cands: dict[str, dict[str, Any]] = {}
    for key, v in state.items():
        cuts = [0] + [i + 1 for i, ch in enumerate(key) if ch == "."]
        for c in cuts:
            prefix, rest = key[:c], key[c:]
            if rest in want:
                cands.setdefault(prefix, {})[rest] = v
                continue
            head, dot, tail = rest.partition(".")
            if dot and head in by_index and f"{by_index[head]}.{tail}" in want:
                cands.setdefault(prefix + "#", {})[f"{by_index[head]}.{tail}"] = v
    return cands


def _match_state_dict(model: Any, state: dict[str, Any], source: str) -> dict[str, Any]:
    """The checkpoint tensors of `model`'s backbone, whatever wraps their keys; every tensor must be present.

    The prefix with the most matching tensors wins; ties go to a non-momentum prefix (MoCo's
    ``encoder_q`` over ``encoder_k``, lightly's ``backbone`` over ``backbone_momentum``), then the shorter."""
    want = model.state_dict()
    cands = _candidates(model, state)

    def rank(prefix: str) -> tuple[int, int, int]:
        momentum = any(h in prefix.lower() for h in _MOMENTUM_HINTS)
        return len(cands[prefix]), int(not momentum), -len(prefix)

    best = cands[max(cands, key=rank)] if cands else {}
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


def _hf_encoder(hf_model: Any) -> Any:
    """A Hugging Face vision model as an encoder: (B, 3, H, W) -> CLS token of `last_hidden_state` (B, D)
    (or `pooler_output` for models without a token sequence, e.g. ConvNets)."""
    import torch.nn as nn

    class HFImageEncoder(nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.hf = m

        def forward(self, x: Any) -> Any:
            out = self.hf(pixel_values=x)
            h = getattr(out, "last_hidden_state", None)
            if h is not None and h.dim() == 3:
                return h[:, 0]  # (B, T, D) -> CLS token (B, D)
            return out.pooler_output.flatten(1)

    return HFImageEncoder(hf_model)


def _load_hf_folder(p: Path, config: dict[str, Any]) -> tuple[Any, int, int, tuple, tuple]:
    """A `save_pretrained` folder -> (module, embed_dim, image_size, mean, std); local files only."""
    try:
        from transformers import AutoModel
    except ImportError:  # pragma: no cover - transformers is a core dependency
        raise UserError("loading a Hugging Face model folder needs `transformers`") from None
    try:
        hf = AutoModel.from_pretrained(str(p), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure is a bad folder for the user
        raise UserError(f"{p}: cannot load the Hugging Face model ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:160]})") from None
    hcfg = hf.config
    dim = int(getattr(hcfg, "hidden_size", 0) or (getattr(hcfg, "hidden_sizes", None) or [0])[-1])
    size = getattr(hcfg, "image_size", 224)
    size = int(size[0] if isinstance(size, list | tuple) else size)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    pre = p / "preprocessor_config.json"
    if pre.is_file():
        pc = json.loads(pre.read_text())
        mean, std = tuple(pc.get("image_mean", mean)), tuple(pc.get("image_std", std))
        crop = pc.get("crop_size") or pc.get("size")
        if isinstance(crop, dict) and crop.get("height"):
            size = int(crop["height"])
    return _hf_encoder(hf), dim, size, mean, std


def _is_torchvision(arch: str) -> bool:
    return arch in _torchvision_names()


def _timm_from_file(arch: str, path: Path) -> tuple[Any, int] | None:
    """timm's own loading of a plain timm state dict: `pretrained_cfg_overlay=dict(file=...)`, head removed by
    `num_classes=0`. None when `arch` is not a timm model or the file is not in timm's layout."""
    try:
        import timm
    except ImportError:  # pragma: no cover
        return None
    if not timm.is_model(arch):
        return None
    # timm loads non-strictly once the head is removed, so a wrapped checkpoint (MoCo's `module.encoder_q.`)
    # would load nothing without a word: use timm only when the file's keys are the model's own
    want = timm.create_model(arch, pretrained=False, num_classes=0).state_dict()
    state = _read_state_dict(path)
    if any(k not in state for k in want if not k.endswith("num_batches_tracked")):
        return None
    try:
        model = timm.create_model(arch, pretrained=True, num_classes=0,
                                  pretrained_cfg_overlay=dict(file=str(path)))
    except Exception:  # noqa: BLE001 - timm could not read it: the prefix matcher takes over
        return None
    return model, int(model.num_features)


def load_encoder(path_or_name: str | Path, device: str = "cpu", *, arch: str | None = None,
                 image_size: int | None = None, seed: int = 0) -> Encoder:
    """Load an encoder folder, a local weights file, or an architecture name (random init).

    `image_size` overrides the stored input size (names and weight files default to 224).
    """
    import torch

    p = Path(str(path_or_name)).expanduser()
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    extra: dict[str, Any] = {}
    hf_cfg: dict[str, Any] = {}
    if p.is_dir() and (p / CONFIG_NAME).is_file():
        try:
            hf_cfg = json.loads((p / CONFIG_NAME).read_text())
        except json.JSONDecodeError:
            hf_cfg = {}
    if p.is_dir() and "model_type" in hf_cfg and hf_cfg.get("format") != "domainfm-encoder":
        model, dim, size, mean, std = _load_hf_folder(p, hf_cfg)
        size = image_size or size
        arch = f"hf:{hf_cfg['model_type']}"
        name = p.name
        source = "huggingface-folder"
        extra_src = {"path": str(p.resolve())}
    elif p.is_dir():
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
        loaded = None if _is_torchvision(arch) else _timm_from_file(arch, p)
        if loaded is not None:
            model, dim = loaded
        else:
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
