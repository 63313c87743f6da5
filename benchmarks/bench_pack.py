"""Packing throughput: `domainfm code pack` (encode_batch) vs tokenising one document at a time.

The peer is what a simple pipeline does (and Megatron-LM's `tools/preprocess_data.py` does per document):
build the same samples, call the tokenizer once per text piece. Both produce the same tokens (checked).
Ours is timed twice: without FIM (the tokens the peer produces, checked equal) and with FIM per row
(`--fim-rate 0.5`, Megatron / StarCoder2), which adds a decode and three encodes per FIM fragment.
Run:  .venv/bin/python benchmarks/bench_pack.py [--repeats 3] [--vocab-size 4096] [--max-file-kb 64]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--max-file-kb", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()

    from domainfm.code.data.fim import Special, repo_sample
    from domainfm.code.data.pack import load_tokenizer, pack_corpus
    from domainfm.code.data.shards import read_index
    from domainfm.code.data.testing import stdlib_rows, write_corpus
    from domainfm.code.tokenizer import train_tokenizer

    tmp = Path(tempfile.mkdtemp(prefix="bench_pack_"))
    rows = stdlib_rows(n_repos=100, files_per_repo=1000, max_file_bytes=args.max_file_kb * 1024)
    corpus = write_corpus(tmp / "corpus", rows, n_shards=4, row_group_size=256)
    mib = sum(r["size"] for r in rows) / 2**20
    print(f"corpus: {len(rows)} files, {len({r['repo_name'] for r in rows})} repos, {mib:.1f} MiB")
    tok_dir = train_tokenizer(corpus, tmp / "tok", vocab_size=args.vocab_size, max_bytes=4 << 20)

    ours, ours_fim, n_tokens, fim_idx = [], [], 0, {}
    for k in range(args.repeats):
        out = tmp / f"packed{k}"
        t0 = time.perf_counter()
        idx = pack_corpus(corpus, tok_dir, out, seq_len=2048, workers=args.workers, val_fraction=0.0, fim_rate=0.0)
        ours.append(time.perf_counter() - t0)
        n_tokens = idx["splits"]["train"]["n_tokens"]
        t0 = time.perf_counter()
        fim_idx = pack_corpus(corpus, tok_dir, tmp / f"fim{k}", seq_len=2048, workers=args.workers,
                              val_fraction=0.0, fim_rate=0.5)["splits"]["train"]
        ours_fim.append(time.perf_counter() - t0)

    # the peer: same samples, one tokenizer call per text piece, same stream
    tok = load_tokenizer(tok_dir)
    by_repo: dict[str, list[tuple[str, str]]] = {}
    for r in rows:
        by_repo.setdefault(r["repo_name"], []).append((r["path"], r["content"]))
    order = read_index(tmp / "packed0")["splits"]["train"]["repos"]
    peer = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        stream: list[int] = []
        for repo in order:
            for p in repo_sample(repo, by_repo[repo], seed=0):
                if isinstance(p, Special):
                    stream.append(tok.token_to_id(p.token))
                elif p:
                    stream.extend(tok.encode(p, add_special_tokens=False).ids)
        peer.append(time.perf_counter() - t0)
    ref = np.fromfile(tmp / "packed0" / "train" / "00000.bin", dtype=read_index(tmp / "packed0")["dtype"])
    assert len(stream) == n_tokens, (len(stream), n_tokens)
    if len(read_index(tmp / "packed0")["splits"]["train"]["shards"]) == 1:
        assert ref[:n_tokens].tolist() == stream  # same tokens as ours

    m_ours, m_peer, m_fim = statistics.median(ours), statistics.median(peer), statistics.median(ours_fim)
    print(f"tokens: {n_tokens:,}")
    print(f"ours  (pack_corpus, no FIM, end to end: scan, read, encode_batch, write): median {m_ours:.2f}s "
          f"-> {n_tokens / m_ours:,.0f} tokens/s")
    print(f"peer  (same samples, one encode() per piece, tokenising only):          median {m_peer:.2f}s "
          f"-> {n_tokens / m_peer:,.0f} tokens/s")
    print(f"ratio ours/peer throughput: {m_peer / m_ours:.2f}x")
    print(f"ours with FIM per row (fim_rate 0.5, fragment rate 0.5): median {m_fim:.2f}s "
          f"-> {n_tokens / m_fim:,.0f} stream tokens/s; FIM {fim_idx['fim_psm']} PSM + {fim_idx['fim_spm']} SPM "
          f"fragments, {fim_idx['fim_kept_plain']} kept plain, {fim_idx['n_truncated_tokens']:,} tokens cut "
          f"({100 * fim_idx['n_truncated_tokens'] / n_tokens:.3f}%), {fim_idx['n_pad_tokens']:,} pad")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
