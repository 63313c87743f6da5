"""Peak memory of the offline `final/` export from a sharded (DCP) checkpoint, streamed vs gathered.

    .venv/bin/python benchmarks/bench_dcp_export.py --preset base --shard-mb 64 [--layers 24] [--work DIR]

Writes a sharded checkpoint (weights + AdamW moments, as `pretrain --fsdp` does) of a freshly initialised
preset, then measures in separate child processes (peak RSS = the child's VmHWM, Linux):
  imports   the interpreter with torch + transformers imported (the floor every variant pays);
  streamed  `dcp_export.write_safetensors` (what `domainfm code export-checkpoint` runs), `--shard-mb` files;
  gathered  the whole model read from the checkpoint, then `save_pretrained` (what a gather-then-save does).
Prints one JSON line: model bytes, each peak, the peaks above the floor, and the export wall times.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

CHILD = {
    "imports": "import torch, transformers, safetensors",
    "streamed": """
import json, sys
from pathlib import Path
from transformers import AutoConfig
from domainfm.code.model.build import build_model
from domainfm.code.train.dcp_export import export_names, write_safetensors
ckpt, dest, shard_mb = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
model = build_model(AutoConfig.for_model(**json.loads((ckpt / "model_config.json").read_text())), device="meta")
dest.mkdir(parents=True)
write_safetensors(ckpt, dest, export_names(model), int(shard_mb * 2**20))
""",
    "gathered": """
import json, sys
from pathlib import Path
from transformers import AutoConfig
from domainfm.code.model.build import build_model
from domainfm.code.train.dcp_export import read_tensors
from domainfm.code.train.dist import unsharded_model
ckpt, dest = Path(sys.argv[1]), Path(sys.argv[2])
cfg = AutoConfig.for_model(**json.loads((ckpt / "model_config.json").read_text()))
unsharded_model(cfg, read_tensors(ckpt)).save_pretrained(dest)
""",
}
# VmHWM (peak resident set of this process image): unlike ru_maxrss it is not inherited across fork + exec
# from the parent, which holds the model it just saved
PEAK = """
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print("PEAK_KB", line.split()[1])
"""


def make_checkpoint(preset: str, path: Path, layers: int = 0) -> int:
    """A DCP folder like `sharded.save_sharded` writes (one process); returns the model's bytes.
    `layers` > 0 overrides the preset's depth (same width: the largest tensor stays the same)."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    from domainfm.code.model.build import build_model

    model = build_model(preset, device="cpu", **({"num_hidden_layers": layers} if layers else {}))
    opt = torch.optim.AdamW(model.parameters())
    model_sd, optim_sd = get_state_dict(model, opt)  # initialises the AdamW moments (zeros)
    dcp.save({"model": model_sd, "optim": optim_sd}, storage_writer=dcp.FileSystemWriter(path), no_dist=True)
    model.config.to_json_file(path / "model_config.json")
    return sum(p.numel() * p.element_size() for p in model.parameters())


def run_child(name: str, args: list[str]) -> tuple[float, float]:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", CHILD[name] + PEAK, *args], capture_output=True, text=True,
                         check=True)
    kb = int(next(ln for ln in res.stdout.splitlines() if ln.startswith("PEAK_KB")).split()[1])
    return kb / 1024, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="base")
    ap.add_argument("--shard-mb", type=float, default=64.0)
    ap.add_argument("--layers", type=int, default=0, help="override the preset's number of layers")
    ap.add_argument("--work", type=Path, default=Path("/tmp/domainfm_dcp_bench"))
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    ckpt = a.work / "ckpt"
    model_bytes = make_checkpoint(a.preset, ckpt, a.layers)
    floor, _ = run_child("imports", [])
    streamed, t_s = run_child("streamed", [str(ckpt), str(a.work / "streamed"), str(a.shard_mb)])
    gathered, t_g = run_child("gathered", [str(ckpt), str(a.work / "gathered")])
    ckpt_mb = sum(f.stat().st_size for f in ckpt.iterdir()) / 2**20
    print(json.dumps({
        "preset": a.preset, "layers": a.layers or None, "model_mb": round(model_bytes / 2**20, 1), "checkpoint_mb": round(ckpt_mb, 1),
        "shard_mb": a.shard_mb, "n_files": len(list((a.work / "streamed").glob("*.safetensors"))),
        "peak_rss_mb": {"imports": round(floor), "streamed": round(streamed), "gathered": round(gathered)},
        "above_imports_mb": {"streamed": round(streamed - floor), "gathered": round(gathered - floor)},
        "wall_s": {"streamed": round(t_s, 1), "gathered": round(t_g, 1)},
    }))
    shutil.rmtree(a.work, ignore_errors=True)


if __name__ == "__main__":
    main()
