"""Training throughput: our full `pretrain` loop vs a bare transformers training step, as tokens/s and MFU.

    .venv/bin/python benchmarks/bench_train.py --device cpu                 # tiny and small
    .venv/bin/python benchmarks/bench_train.py --device cuda --presets base  # >= 100M params, bf16

MFU = 6 N tokens/s / peak, where N counts the parameters that take part in a matmul per token (the
LM head included, lookup tables not) and `peak` is the dense matmul throughput measured on the same
machine in the same run (fp32 n x n matmuls on CPU, bf16 on GPU; the best of several). "ours" is the
whole loop: memory-mapped data loading and prefetch, autocast, grad clipping, AdamW, LR schedule,
metrics logging; its tokens/s come from the run's own metrics.jsonl. "bare" is model(x, labels=x),
backward, AdamW step on one batch already in memory. Medians over `--repeats` runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, reps: int = 5) -> float:
    """Best FLOP/s of an n x n x n matmul (2 n^3 FLOPs), after a warm-up."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    iters = 3 if device.type == "cpu" else 50
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        for _ in range(iters):
            a @ b
        sync(device)
        best = max(best, 2 * n**3 * iters / (time.perf_counter() - t))
    return best


def write_packed(root: Path, vocab: int, seq_len: int, n_seqs: int) -> Path:
    from domainfm.code.data.shards import token_dtype, write_index, write_shard

    rng = np.random.default_rng(0)
    dt = token_dtype(vocab)
    train = rng.integers(0, vocab, size=(n_seqs, seq_len)).astype(dt)
    write_shard(root / "train/00000.bin", train)
    write_index(root, {"seq_len": seq_len, "dtype": dt.name, "vocab_size": vocab, "seed": 0,
                       "splits": {"train": {"shards": [{"file": "train/00000.bin", "n_seqs": n_seqs}],
                                            "n_seqs": n_seqs, "n_tokens": n_seqs * seq_len}}})
    return root


def bare_step_tps(preset: str, vocab: int, device: torch.device, batch: int, seq_len: int, steps: int,
                  warmup: int, ptdtype: torch.dtype | None) -> float:
    from domainfm.code.model import build_model

    torch.manual_seed(0)
    model = build_model(preset, vocab_size=vocab, device=device)
    model.config.use_cache = False
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=device.type == "cuda" or None)
    x = torch.randint(0, vocab, (batch, seq_len), device=device)
    times = []
    for i in range(warmup + steps):
        sync(device)
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=ptdtype, enabled=ptdtype is not None):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return batch * seq_len / statistics.median(times)


def ours_tps(preset: str, vocab: int, device: torch.device, batch: int, seq_len: int, steps: int, warmup: int,
             packed: Path, out: Path) -> float:
    from domainfm.code.train.config import PretrainConfig
    from domainfm.code.train.trainer import pretrain

    cfg = PretrainConfig(data=str(packed), out=str(out), preset=preset, batch_size=batch, seq_len=seq_len,
                         max_steps=warmup + steps, warmup=2, save_every=0, eval_every=0, tensorboard=False,
                         device=device.type, resume=False)
    pretrain(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # per-step tokens/s over the whole loop, after the warm-up; the final step (checkpoint + export) excluded
    return statistics.median(r["tokens_per_s"] for r in rows[warmup:-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--presets", default=None, help="comma-separated (default: tiny,small on CPU; base on GPU)")
    ap.add_argument("--vocab-size", type=int, default=49152, help="StarCoder2's vocabulary by default")
    ap.add_argument("--seq-len", type=int, default=None, help="default 256 on CPU, 2048 on GPU")
    ap.add_argument("--batch-size", type=int, default=None, help="default 8 on CPU, 16 on GPU")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    import os

    os.environ.setdefault("DOMAINFM_PROGRESS", "0")
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    presets = (args.presets or ("base" if gpu else "tiny,small")).split(",")
    seq_len = args.seq_len or (2048 if gpu else 256)
    batch = args.batch_size or (16 if gpu else 8)
    ptdtype = torch.bfloat16 if gpu else None
    peak_dtype = torch.bfloat16 if gpu else torch.float32
    peak_n = 8192 if gpu else 2048

    from domainfm.code.model import build_model
    from domainfm.code.model.build import flops_params

    print(f"device {device}, threads {torch.get_num_threads()}, seq_len {seq_len}, batch {batch}, "
          f"vocab {args.vocab_size}, precision {'bf16 autocast' if gpu else 'fp32'}")
    peaks = [matmul_peak(device, peak_dtype, peak_n)]
    print(f"dense matmul peak ({peak_dtype}, n={peak_n}): {peaks[0] / 1e9:,.1f} GFLOP/s")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        packed = write_packed(Path(tmp) / "packed", args.vocab_size, seq_len,
                              n_seqs=max(64, batch * (args.steps + args.warmup + 2)))
        for preset in presets:
            n = flops_params(build_model(preset, vocab_size=args.vocab_size, device="meta"))
            bare, ours = [], []
            for r in range(args.repeats):  # interleaved, so machine noise hits both alike
                bare.append(bare_step_tps(preset, args.vocab_size, device, batch, seq_len, args.steps, args.warmup,
                                          ptdtype))
                ours.append(ours_tps(preset, args.vocab_size, device, batch, seq_len, args.steps, args.warmup,
                                     packed, Path(tmp) / f"run-{preset}-{r}"))
            peaks.append(matmul_peak(device, peak_dtype, peak_n))
            results.append({"preset": preset, "flops_params": n, "bare_tps": statistics.median(bare),
                            "ours_tps": statistics.median(ours), "bare_all": bare, "ours_all": ours})
    peak = max(peaks)
    print(f"peak (best of {len(peaks)} measurements): {peak / 1e9:,.1f} GFLOP/s\n")
    print(f"{'preset':<8}{'N (6N)':>10}{'bare tok/s':>12}{'bare MFU':>10}{'ours tok/s':>12}{'ours MFU':>10}"
          f"{'ours/bare':>11}")
    for r in results:
        r["bare_mfu"] = 6 * r["flops_params"] * r["bare_tps"] / peak
        r["ours_mfu"] = 6 * r["flops_params"] * r["ours_tps"] / peak
        print(f"{r['preset']:<8}{r['flops_params'] / 1e6:>9.1f}M{r['bare_tps']:>12,.0f}{r['bare_mfu']:>10.1%}"
              f"{r['ours_tps']:>12,.0f}{r['ours_mfu']:>10.1%}{r['ours_tps'] / r['bare_tps']:>11.2f}")
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "peak_flops": peak, "seq_len": seq_len,
                                         "batch": batch, "vocab": args.vocab_size, "results": results}, indent=2))


if __name__ == "__main__":
    main()
