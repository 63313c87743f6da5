"""Encoders from public checkpoint layouts, each written here in its exact key layout (nothing downloaded).

* facebookresearch/moco `main_moco.py` saves ``{'epoch', 'arch', 'state_dict': model.state_dict(),
  'optimizer'}`` of ``DistributedDataParallel(MoCo)``: keys ``module.encoder_q.<resnet key>``,
  ``module.encoder_k.<resnet key>``, ``module.queue``, ``module.queue_ptr``; with ``--mlp`` the head is
  ``fc = Sequential(Linear(dim_mlp, dim_mlp), ReLU(), fc)`` -> ``module.encoder_q.fc.0.*`` / ``fc.2.*``.
* lightly's MoCo example: ``backbone = nn.Sequential(*list(resnet.children())[:-1])`` (keys
  ``backbone.<child index>.*``), ``backbone_momentum`` a deep copy, ``projection_head.layers.*``;
  a Lightning checkpoint wraps the module's state dict in ``state_dict``.
* timm: a plain ``state_dict()`` of a timm model with its classifier.
* Hugging Face: a ViT saved with ``save_pretrained`` (+ ``preprocessor_config.json``), like Phikon.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torchvision

from domainfm.core.errors import UserError
from domainfm.pathology.features.encoders import load_encoder


def _resnet18(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None)


def _same_backbone(enc_model: nn.Module, ref: nn.Module, size: int = 32) -> None:
    ref = copy.deepcopy(ref).eval()
    ref.fc = nn.Identity()
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        assert torch.allclose(enc_model(x), ref(x), atol=1e-5)


def test_facebookresearch_moco_checkpoint_takes_encoder_q(tmp_path: Path) -> None:
    q, k = _resnet18(1), _resnet18(2)  # query and key encoders differ (as after training)
    for net in (q, k):  # --mlp head
        net.fc = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 128))
    state = {f"module.encoder_q.{n}": v for n, v in q.state_dict().items()}
    state.update({f"module.encoder_k.{n}": v for n, v in k.state_dict().items()})
    state["module.queue"] = torch.randn(128, 4096)
    state["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    assert "module.encoder_q.fc.0.weight" in state and "module.encoder_q.fc.2.weight" in state
    path = tmp_path / "checkpoint_0199.pth.tar"
    torch.save({"epoch": 200, "arch": "resnet18", "state_dict": state, "optimizer": {"state": {}, "param_groups": []}},
               path)
    enc = load_encoder(path, arch="resnet18", image_size=32)
    _same_backbone(enc.model, q)
    assert not torch.equal(enc.model.conv1.weight, k.conv1.weight)


def test_lightly_sequential_backbone_checkpoint(tmp_path: Path) -> None:
    resnet = _resnet18(3)
    backbone = nn.Sequential(*list(resnet.children())[:-1])
    momentum = copy.deepcopy(backbone)
    with torch.no_grad():
        for prm in momentum.parameters():
            prm.add_(1.0)
    module_state = {f"backbone.{n}": v for n, v in backbone.state_dict().items()}
    module_state.update({f"backbone_momentum.{n}": v for n, v in momentum.state_dict().items()})
    module_state.update({"projection_head.layers.0.weight": torch.randn(512, 512),
                         "projection_head.layers.2.weight": torch.randn(128, 512)})
    assert "backbone.4.0.conv1.weight" in module_state  # layer1 is child 4
    path = tmp_path / "epoch=99-step=1000.ckpt"
    torch.save({"epoch": 99, "global_step": 1000, "state_dict": module_state}, path)
    enc = load_encoder(path, arch="resnet18", image_size=32)
    _same_backbone(enc.model, resnet)


def test_torchvision_state_dict_and_shape_errors(tmp_path: Path) -> None:
    net = _resnet18(4)
    path = tmp_path / "resnet18-f37072fd.pth"  # torchvision's file naming
    torch.save(net.state_dict(), path)
    _same_backbone(load_encoder(path, image_size=32).model, net)
    with pytest.raises(UserError, match="do not fit"):
        load_encoder(path, arch="resnet50")


def test_timm_state_dict_loaded_by_timm(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(5)
    ref = timm.create_model("resnet10t", pretrained=False)  # timm-only name, with its 1000-class head
    path = tmp_path / "resnet10t.pth"
    torch.save(ref.state_dict(), path)
    enc = load_encoder(path, arch="resnet10t", image_size=32)
    assert enc.embed_dim == ref.num_features
    ref.eval().reset_classifier(0)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(enc.model(x), ref(x), atol=1e-5)
    # a MoCo-wrapped timm backbone: timm's non-strict loader would load nothing; the prefix matcher does it
    wrapped = tmp_path / "moco_resnet10t.pth.tar"
    torch.save({"state_dict": {f"module.encoder_q.{k}": v for k, v in ref.state_dict().items()}}, wrapped)
    with torch.no_grad():
        assert torch.allclose(load_encoder(wrapped, arch="resnet10t", image_size=32).model(x), ref(x), atol=1e-5)


def test_huggingface_folder_like_phikon(tmp_path: Path) -> None:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(6)
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    image_size=32, patch_size=8)
    hf = ViTModel(cfg).eval()
    folder = tmp_path / "phikon-like"
    hf.save_pretrained(folder)
    ViTImageProcessor(image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25],
                      size={"height": 32, "width": 32}).save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["model_type"] == "vit"
    enc = load_encoder(folder)
    assert enc.embed_dim == 32 and enc.image_size == 32 and enc.config["mean"] == [0.5] * 3
    assert enc.config["source"] == "huggingface-folder"
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(enc.model(x), hf(pixel_values=x).last_hidden_state[:, 0], atol=1e-5)
    # the spec recorded in feature files loads the same encoder back
    again = load_encoder(enc.config["spec"])
    with torch.no_grad():
        assert torch.allclose(again.model(x), enc.model(x), atol=1e-6)


class HParams(dict):
    """Stands for the objects Lightning pickles under `hyper_parameters` (AttributeDict, ...)."""


def test_checkpoint_with_python_objects_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": _resnet18(7).state_dict(), "hyper_parameters": HParams(lr=0.1)}, path)
    with pytest.raises(UserError, match="re-save its weights") as e:
        load_encoder(path, arch="resnet18")
    assert "\n" not in str(e.value) and "\x1b" not in str(e.value)
