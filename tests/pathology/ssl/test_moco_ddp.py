"""MoCo v2 under torchrun DDP: 2 CPU processes (gloo) stay bit-identical, the encoder is saved once, resume is exact.

One `python -m torch.distributed.run --nproc-per-node 2` launch runs a script that (a) trains 4 steps,
(b) checks the cross-rank shuffled keys against the unshuffled key encoder in eval mode, (c) trains the
same run "killed" after step 2 and resumed; every rank dumps its state and the test compares them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

SCRIPT = """
import sys
from dataclasses import replace

import torch
import torch.distributed as dist
import torch.nn.functional as F

from domainfm.pathology.ssl.config import MocoConfig
from domainfm.pathology.ssl.train import run_pretrain

tiles, out = sys.argv[1], sys.argv[2]
dist.init_process_group("gloo")  # run_pretrain uses a group the caller made (and leaves it to the caller)
rank = dist.get_rank()
# 48 images / (8 per rank x 2 ranks) = 3 steps per epoch: 4 steps cross an epoch; the queue of 48 wraps
base = MocoConfig(tiles=tiles, output=f"{out}/straight", backbone="resnet18", image_size=32, batch_size=8,
                  queue_size=48, max_steps=4, workers=0, device="cpu", checkpoint_every=2, seed=3, threads=1)


def dump(run, tag):
    sd = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    torch.save({"model": sd, "loss": run.state["loss"]}, f"{out}/{tag}_rank{rank}.pt")


run = run_pretrain(base)
dump(run, "straight")

# the shuffle/unshuffle bookkeeping: in eval mode BN uses running stats, so a key must not depend on
# which rank encoded it; the cross-rank path must give each rank the keys of its own images
model = run.model.eval()
x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(100 + rank))
with torch.no_grad():
    k = model._keys_ddp(x, torch.Generator().manual_seed(7))
    ref = F.normalize(model.encoder_k(x), dim=1)
torch.save({"k": k, "ref": ref}, f"{out}/keys_rank{rank}.pt")

killed = replace(base, output=f"{out}/resumed")
run_pretrain(killed, stop_at_step=2)
dump(run_pretrain(replace(killed, resume=True)), "resumed")
dist.barrier()
dist.destroy_process_group()
"""


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp_tiles")
    rng = np.random.default_rng(1)
    for c, base in ((0, (230, 160, 200)), (1, (110, 60, 160))):
        d = root / str(c)
        d.mkdir()
        for i in range(24):
            arr = np.clip(np.asarray(base) + rng.normal(0, 30, size=(40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(d / f"t{i}.png")
    return root


def test_two_rank_ddp_in_sync_saved_once_and_resumes_exactly(tiles: Path, tmp_path: Path, torchrun) -> None:
    from domainfm.pathology import load_encoder

    script = tmp_path / "moco_ddp.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    res = torchrun([str(script), str(tiles), str(out)], timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]

    r0, r1 = (torch.load(out / f"straight_rank{r}.pt") for r in (0, 1))
    sd0, sd1 = r0["model"], r1["model"]
    assert sd0.keys() == sd1.keys()
    # query encoder, key encoder (params and averaged BN stats), queue and pointer: bit-identical
    for k in sd0:
        assert torch.equal(sd0[k], sd1[k]), f"ranks differ at {k}"
    assert any(k.startswith("encoder_k.") for k in sd0) and "queue" in sd0
    # the queue took the keys of the global batch: 4 steps x 16 keys into 48 slots
    assert int(sd0["queue_ptr"]) == (4 * 16) % 48
    torch.testing.assert_close(sd0["queue"].norm(dim=0), torch.ones(48))
    # the key encoder moved by momentum, and is not a copy of the query encoder
    assert not torch.equal(sd0["encoder_k.0.conv1.weight"], sd0["encoder_q.0.conv1.weight"])
    assert len(r0["loss"]) == 4 and all(np.isfinite(r0["loss"])) and r0["loss"] == r1["loss"]

    # the encoder, written once by rank 0, is rank 0's query backbone and loads with load_encoder
    enc_dir = out / "straight"
    cfg = json.loads((enc_dir / "config.json").read_text())
    assert cfg["world_size"] == 2 and cfg["global_batch"] == 16 and cfg["steps"] == 4
    assert cfg["base_lr"] == pytest.approx(0.03 * 16 / 256)  # lr rule on the global batch
    assert sorted(p.name for p in enc_dir.glob("*.tmp*")) == []
    enc = load_encoder(enc_dir)
    for k, v in enc.model.state_dict().items():
        assert torch.equal(v, sd0[f"encoder_q.0.{k}"]), k
    assert len(json.loads((enc_dir / "history.json").read_text())["loss"]) == 4

    # killed after step 2 and resumed under DDP: the same losses and the same state as the straight run
    s0, s1 = (torch.load(out / f"resumed_rank{r}.pt") for r in (0, 1))
    assert s0["loss"] == r0["loss"] and s1["loss"] == r0["loss"]
    for k in sd0:
        assert torch.equal(s0["model"][k], sd0[k]), f"resumed run differs at {k}"
        assert torch.equal(s1["model"][k], sd0[k]), f"resumed rank 1 differs at {k}"

    for r in (0, 1):
        keys = torch.load(out / f"keys_rank{r}.pt")
        torch.testing.assert_close(keys["k"], keys["ref"], rtol=1e-4, atol=1e-5)
