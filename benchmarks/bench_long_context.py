"""Loss by position on long rows: what the long-context stage changes.

    .venv/bin/python benchmarks/bench_long_context.py --data PACKED_LONG --split val --rows 16 \\
        --model base=runs/base/final --model base_theta_1e6=runs/base/final:1e6 --model stage=runs/long/final

For each model (a `final/` folder; `:THETA` evaluates it with another RoPE theta and no training, the
"just change the config" baseline), the mean next-token loss over the first `--rows` rows of the split, in
position buckets (`--buckets`, default: the base training length and beyond). `<fim_pad>` targets are
masked as in training. Prints one JSON line per model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="packed folder (code pack) at the long length")
    ap.add_argument("--split", default="val")
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--model", action="append", required=True, help="NAME=FINAL_DIR[:THETA]")
    ap.add_argument("--buckets", default="", help="comma-separated bucket starts (default 0,L/4,L/2)")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from domainfm.code.data.shards import PackedDataset
    from domainfm.code.train.stages import rope_theta, set_rope_theta

    if args.threads:
        torch.set_num_threads(args.threads)
    ds = PackedDataset(args.data, args.split)
    L = ds.seq_len
    starts = [int(b) for b in args.buckets.split(",")] if args.buckets else [0, L // 4, L // 2]
    x = torch.stack([torch.from_numpy(ds[i]) for i in range(min(args.rows, len(ds)))])  # (R, L)
    labels = x[:, 1:].clone()
    if ds.pad_id is not None:
        labels[labels == ds.pad_id] = -100
    for spec in args.model:
        name, _, rest = spec.partition("=")
        path, _, theta = rest.partition(":")
        cfg = AutoConfig.from_pretrained(Path(path))
        if theta:
            set_rope_theta(cfg, float(theta))
        cfg.max_position_embeddings = max(cfg.max_position_embeddings, L)
        model = AutoModelForCausalLM.from_pretrained(Path(path), config=cfg, dtype=torch.float32).eval()
        with torch.no_grad():
            logits = model(input_ids=x).logits[:, :-1]  # (R, L-1, V): predicts positions 1..L-1
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none",
                                                    ignore_index=-100)  # (R, L-1)
        mask = labels != -100
        out = {"model": name, "rope_theta": rope_theta(cfg), "rows": int(x.shape[0]), "seq_len": L}
        for a, b in zip(starts, [*starts[1:], L], strict=True):
            m = mask[:, max(a - 1, 0):b - 1]
            out[f"loss_{a}_{b}"] = round(float((nll[:, max(a - 1, 0):b - 1] * m).sum() / m.sum()), 4)
        print(json.dumps(out))


if __name__ == "__main__":
    main()
