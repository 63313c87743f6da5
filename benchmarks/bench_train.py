"""Training throughput: our full `pretrain` loop vs a bare transformers training step, as tokens/s and MFU.

    .venv/bin/python benchmarks/bench_train.py --device cpu                 # tiny and small
    .venv/bin/python benchmarks/bench_train.py --device cuda --presets base  # >= 100M params, bf16
    .venv/bin/python benchmarks/bench_train.py --components-only            # CPU time only (loaded box)

MFU = 6 N tokens/s / peak, where N counts the parameters that take part in a matmul per token (the
LM head included, lookup tables not) and `peak` is the dense matmul throughput measured on the same
machine in the same run (fp32 n x n matmuls on CPU, bf16 on GPU; the best of several). "ours" is the
whole loop: memory-mapped data loading and prefetch, autocast, grad clipping, AdamW, LR schedule,
metrics logging; its tokens/s come from the run's own metrics.jsonl. "bare" is model(x, labels=x),
backward, AdamW step (torch's default on CPU: the per-tensor for-loop) on one batch already in memory.
Medians over `--repeats` runs.

"components" (CPU): one step (bare, and ours = `Trainer._train_step`) and two of its parts, measured
single-threaded as thread CPU time, which a loaded machine hardly changes (wall time does): AdamW as torch's CPU default vs fused (what `pretrain` uses),
and the LM head + cross-entropy as transformers computes it (full (B*L, V) logits, F.cross_entropy)
vs `domainfm.code.train.loss.linear_cross_entropy` (chunked); forward + backward, medians of interleaved
repeats; and from them a CPU-time MFU (6 N tokens per thread CPU second over one core's fp32 matmul
FLOP per CPU second), which a loaded machine distorts far less than the wall-clock MFU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
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

    # warm-up steps, `steps` timed steps, then one untimed last step: the end of the run (final evaluation,
    # checkpoint, export) stays out of the timed rows whatever the loop logs around it
    cfg = PretrainConfig(data=str(packed), out=str(out), preset=preset, batch_size=batch, seq_len=seq_len,
                         max_steps=warmup + steps + 1, warmup=2, save_every=0, eval_every=0, tensorboard=False,
                         device=device.type, resume=False)
    pretrain(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # per-step tokens/s over the whole loop (each row: the tokens of its step over the time since the last row)
    return statistics.median(r["tokens_per_s"] for r in rows[warmup:warmup + steps])


def _thread_cpu_s(fn: object, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.thread_time()
        fn()
        out.append(time.thread_time() - t)
    return out


def bare_step(preset: str, vocab: int, batch: int, seq_len: int) -> Callable[[], None]:
    """One bare transformers training step on a fixed batch: model(x, labels=x), backward, AdamW."""
    from domainfm.code.model import build_model

    torch.manual_seed(0)
    model = build_model(preset, vocab_size=vocab, device="cpu")
    model.config.use_cache = False
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    x = torch.randint(0, vocab, (batch, seq_len))

    def step() -> None:
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def component_ratios(preset: str, vocab: int, batch: int, seq_len: int, repeats: int,
                     packed: Path, out: Path) -> dict[str, float]:
    """Single-threaded CPU seconds of one step: bare vs ours (`Trainer._train_step`: the loop without its
    data thread and logging), AdamW (default vs fused), head + CE (plain vs chunked)."""
    import torch.nn.functional as F

    from domainfm.code.model import build_model
    from domainfm.code.model.build import flops_params
    from domainfm.code.train.config import PretrainConfig
    from domainfm.code.train.data import StepLoader
    from domainfm.code.train.loss import linear_cross_entropy
    from domainfm.code.train.trainer import Trainer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        bare = bare_step(preset, vocab, batch, seq_len)
        tr = Trainer(PretrainConfig(data=str(packed), out=str(out), preset=preset, batch_size=batch,
                                    seq_len=seq_len, max_steps=1000, warmup=2, save_every=0, eval_every=0,
                                    tensorboard=False, device="cpu", resume=False, threads=1))
        tr._setup()
        loader = StepLoader(tr.train_ds, tr.plan, tr.seq_len, tr.info.device)
        batches = loader.get(0)
        loader.close()

        def ours_step() -> None:
            tr._train_step(batches)

        bare()
        ours_step()
        torch.manual_seed(0)
        model = build_model(preset, vocab_size=vocab, device="cpu")
        params = list(model.parameters())
        opts = {}
        for kind in ("default", "fused"):
            ps = [p.detach().clone().requires_grad_() for p in params]
            for p in ps:
                p.grad = torch.randn_like(p) * 1e-3
            opts[kind] = torch.optim.AdamW(ps, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                                           fused=kind == "fused" or None)
            opts[kind].step()  # allocates the state
        w0 = model.lm_head.weight.detach()
        h0 = torch.randn(batch * seq_len, w0.shape[1])
        y = torch.randint(0, vocab, (batch * seq_len,))

        def head(chunked: bool) -> None:
            h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
            loss = linear_cross_entropy(h, w, y) if chunked else F.cross_entropy(h @ w.t(), y)
            loss.backward()

        a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
        peak1 = 2 * 2048**3 / min(_thread_cpu_s(lambda: a @ b, 5))  # one core's fp32 matmul FLOP per CPU second
        fns = {"step_bare": bare, "step_ours": ours_step, "adamw_default": opts["default"].step, "adamw_fused": opts["fused"].step,
               "head_ce_plain": lambda: head(False), "head_ce_chunked": lambda: head(True)}
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(repeats):  # interleaved
            for k, fn in fns.items():
                times[k] += _thread_cpu_s(fn, 1)
        out = {k: statistics.median(v) for k, v in times.items()}
        flops = 6 * flops_params(model) * batch * seq_len  # per step, the 6N rule
        out.update(peak_1thread=peak1, mfu_bare=flops / out["step_bare"] / peak1,
                   mfu_ours=flops / out["step_ours"] / peak1)
        return out
    finally:
        torch.set_num_threads(threads)


def wall_clock(args: argparse.Namespace, device: torch.device, presets: list[str], batch: int, seq_len: int,
               ptdtype: torch.dtype | None, peak_dtype: torch.dtype, peak_n: int) -> tuple[list[dict], float]:
    """The wall-clock table: matmul peak, bare step and our loop per preset (interleaved repeats)."""
    from domainfm.code.model import build_model
    from domainfm.code.model.build import flops_params

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
    return results, peak


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
    ap.add_argument("--no-components", action="store_true", help="skip the single-threaded component timings")
    ap.add_argument("--components-only", action="store_true",
                    help="only the single-threaded CPU-time components (robust on a loaded machine)")
    args = ap.parse_args()
    for name, least in (("steps", 1), ("warmup", 0), ("repeats", 1)):  # medians of empty lists otherwise
        if getattr(args, name) < least:
            raise SystemExit(f"bench_train.py: --{name} must be >= {least}, got {getattr(args, name)}")

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

    print(f"device {device}, threads {torch.get_num_threads()}, seq_len {seq_len}, batch {batch}, "
          f"vocab {args.vocab_size}, precision {'bf16 autocast' if gpu else 'fp32'}")
    if args.components_only:
        results, peak = [], 0.0
    else:
        results, peak = wall_clock(args, device, presets, batch, seq_len, ptdtype, peak_dtype, peak_n)
    components = {}
    if not gpu and not args.no_components:
        print("\ncomponents (1 thread, thread CPU ms per step, median of interleaved repeats):")
        print(f"{'preset':<8}{'bare step':>11}{'ours':>8}{'bare/ours':>10}{'AdamW default':>15}{'fused':>7}"
              f"{'ratio':>7}{'head+CE plain':>15}{'chunked':>9}{'ratio':>7}{'CPU-time MFU bare':>19}{'ours':>7}")
        for preset in presets:
            with tempfile.TemporaryDirectory() as tmp:
                packed = write_packed(Path(tmp) / "packed", args.vocab_size, seq_len, n_seqs=max(64, batch))
                c = components[preset] = component_ratios(preset, args.vocab_size, batch, seq_len,
                                                          max(3, args.repeats), packed, Path(tmp) / "run")
            print(f"{preset:<8}{c['step_bare'] * 1e3:>11,.0f}{c['step_ours'] * 1e3:>8,.0f}"
                  f"{c['step_bare'] / c['step_ours']:>10.2f}{c['adamw_default'] * 1e3:>15,.0f}"
                  f"{c['adamw_fused'] * 1e3:>7,.0f}"
                  f"{c['adamw_default'] / c['adamw_fused']:>7.1f}{c['head_ce_plain'] * 1e3:>15,.0f}"
                  f"{c['head_ce_chunked'] * 1e3:>9,.0f}{c['head_ce_plain'] / c['head_ce_chunked']:>7.2f}"
                  f"{c['mfu_bare']:>19.1%}{c['mfu_ours']:>7.1%}")
        if components:
            print(f"(CPU-time MFU = 6 N tokens / thread CPU s / one core's fp32 2048^3 matmul FLOP per CPU s, "
                  f"{max(c['peak_1thread'] for c in components.values()) / 1e9:,.1f} G)")
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "peak_flops": peak, "seq_len": seq_len,
                                         "batch": batch, "vocab": args.vocab_size, "results": results,
                                         "components": components}, indent=2))


if __name__ == "__main__":
    main()
