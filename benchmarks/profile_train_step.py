"""Where the time of one CPU training step goes: torch.profiler self-CPU time by component.

    .venv/bin/python benchmarks/profile_train_step.py --presets tiny,small            # bare step and ours
    .venv/bin/python benchmarks/profile_train_step.py --presets tiny --table 25       # + the top 25 ops

Profiles `--steps` steps (after `--warmup` untimed ones) of (a) the bare transformers step of
bench_train.py (`model(x, labels=x)`, backward, AdamW, zero_grad) and (b) our `Trainer._train_step`
(built by `pretrain`'s own set-up on packed shards), and splits the profiler's self CPU time into
components by operator name, input shapes and enclosing `record_function` range:

- `lm head matmul`: matmuls with the vocabulary as a dimension (logits = h W^T and its two gradients);
- `cross-entropy`: every other op on a vocabulary-sized tensor (log-softmax, nll, their backward, copies);
- `attention kernel`: SDPA (flash attention for CPU) forward and backward;
- `other matmuls`: q/k/v/o projections and the MLP;
- `optimizer`, `grad clip`, `lr schedule`: their own ranges;
- `elementwise/other`: LayerNorm, GELU, RoPE, residual adds, embedding, autograd bookkeeping.

Self time is CPU time inside the op, so the shares stay informative on a loaded machine (a busy
neighbour stretches every op alike); absolute times do not. The profiler adds ~10 us per op.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_train import bare_step, write_packed  # noqa: E402

MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm"}
RANGES = {"Optimizer.step": "optimizer", "Optimizer.zero_grad": "optimizer", "clip_grad": "grad clip",
          "lr_schedule": "lr schedule"}


def _dims(evt: Any) -> set[int]:
    return {d for shape in (evt.input_shapes or []) if isinstance(shape, list) for d in shape}


def classify(evt: Any, vocab: int) -> str:
    p = evt
    while p is not None:  # an enclosing range names the component
        for prefix, name in RANGES.items():
            if p.name.startswith(prefix):
                return name
        p = p.cpu_parent
    name = evt.name
    if "scaled_dot_product" in name or "flash_attention" in name:
        return "attention kernel"
    vocab_sized = vocab in _dims(evt)
    if name in MATMULS:
        return "lm head matmul" if vocab_sized else "other matmuls"
    if vocab_sized or "nll_loss" in name or "log_softmax" in name or "cross_entropy" in name:
        return "cross-entropy"
    return "elementwise/other"


def breakdown(prof: Any, vocab: int, steps: int) -> dict[str, float]:
    """Self CPU milliseconds per step, by component."""
    out: dict[str, float] = defaultdict(float)
    for evt in prof.events():
        if evt.name.startswith("ProfilerStep"):
            continue
        out[classify(evt, vocab)] += evt.self_cpu_time_total / 1e3 / steps
    return dict(out)


def profile(step_fn: Any, warmup: int, steps: int) -> Any:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    for _ in range(warmup):
        step_fn()
    with tprofile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step_fn()
    return prof


def ours_step(preset: str, vocab: int, batch: int, seq_len: int, packed: Path, out: Path, **cfg_kw: Any) -> Any:
    from domainfm.code.train.config import PretrainConfig
    from domainfm.code.train.data import StepLoader
    from domainfm.code.train.trainer import Trainer

    cfg = PretrainConfig(data=str(packed), out=str(out), preset=preset, batch_size=batch, seq_len=seq_len,
                         max_steps=1000, warmup=2, save_every=0, eval_every=0, tensorboard=False, device="cpu",
                         resume=False, threads=torch.get_num_threads(), **cfg_kw)
    tr = Trainer(cfg)
    tr._setup()
    loader = StepLoader(tr.train_ds, tr.plan, tr.seq_len, tr.info.device)
    clip = torch.nn.utils.clip_grad_norm_

    def clip_ranged(*a: Any, **k: Any) -> Any:
        with torch.profiler.record_function("clip_grad"):
            return clip(*a, **k)

    torch.nn.utils.clip_grad_norm_ = clip_ranged  # only to name the range in the profile

    def step() -> None:
        tr._train_step(loader.get(tr.step))
        tr.step += 1

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--vocab-size", type=int, default=49152)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--table", type=int, default=0, help="also print the N top ops by self time")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default: one per core)")
    args = ap.parse_args()
    os.environ.setdefault("DOMAINFM_PROGRESS", "0")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"threads {torch.get_num_threads()} (interop {torch.get_num_interop_threads()}), "
          f"batch {args.batch_size} x seq {args.seq_len}, vocab {args.vocab_size}")
    results = {}
    cfg_kw: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        packed = write_packed(Path(tmp) / "packed", args.vocab_size, args.seq_len,
                              n_seqs=args.batch_size * (args.steps + args.warmup + 4))
        for preset in args.presets.split(","):
            for who in ("bare", "ours"):
                fn = (bare_step(preset, args.vocab_size, args.batch_size, args.seq_len) if who == "bare" else
                      ours_step(preset, args.vocab_size, args.batch_size, args.seq_len, packed,
                                Path(tmp) / f"run-{preset}", **cfg_kw))
                prof = profile(fn, args.warmup, args.steps)
                b = breakdown(prof, args.vocab_size, args.steps)
                results[f"{preset}/{who}"] = b
                total = sum(b.values())
                print(f"\n{preset} {who}: {total:,.0f} ms self CPU per step")
                for k, v in sorted(b.items(), key=lambda kv: -kv[1]):
                    print(f"  {k:<20}{v:>10,.1f} ms {v / total:>7.1%}")
                if args.table:
                    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total",
                                                                              row_limit=args.table))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
