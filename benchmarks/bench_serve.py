"""Serving throughput: `domainfm code serve` vs sequential HF `generate` vs `transformers serve`.

    .venv/bin/python benchmarks/bench_serve.py --presets tiny,small --clients 1,4,16,64 --max-tokens 32

One run, one model folder per preset (random weights, StarCoder2 preset config at vocab 49152, a BPE
tokenizer trained here on standard-library code), the same fixed prompt set (HumanEval prompts from
$DOMAINFM_DATA, the last `--prompt-tokens` tokens of each) and a forced output length: the end-of-text, FIM and
unused vocabulary rows of the tied embedding are zeroed, so under greedy decoding no request stops early
(every answer's `completion_tokens` is checked to be exactly `--max-tokens`).

Per concurrency level C, C clients send `max(C, --min-requests)` requests in all; reported: generated
tokens/s over the level's wall time and per-request latency p50/p99. "sequential HF generate" is one
`model.generate` per request, one after another, in this process (its tokens/s does not depend on C; its
latency at C clients would be C times larger). Servers run as separate processes on loopback. Every system
gets the same number of torch threads (`--threads`, default 1: see its help).

Shared, loaded machines: `--repeats R` interleaves R rounds (each round measures the sequential baseline and
every server at every level, servers in a rotated order; a server not being measured is SIGSTOPped so its idle
threads take no CPU); the tables give medians and the paired ratios ours / peer within each round. "CPU ms /
token" is the measured process's user + system CPU time per generated token (this process for sequential
`generate`, the server process otherwise): less sensitive to other jobs on the machine than wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def humaneval_prompts(n: int) -> list[str]:
    data = Path(os.environ.get("DOMAINFM_DATA", "")) / "code/humaneval-plus/HumanEvalPlus-Mini.jsonl.gz"
    if not data.is_file():
        sys.exit(f"{data}: not found (set DOMAINFM_DATA)")
    with gzip.open(data, "rt") as f:
        return [json.loads(line)["prompt"] for line in f][:n]


def build_model(preset: str, out: Path) -> Path:
    """Random-weight preset model + a stdlib BPE tokenizer; rows that could end a request early zeroed."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from domainfm.code.model import build_model as build

    special = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>", "<repo_name>",
               "<file_sep>"]
    root = Path(json.__file__).parent.parent
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(root.glob("*.py"))[:200]]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=16384, special_tokens=special,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=special[0], bos_token=special[0],
                                   unk_token=special[0], pad_token=special[0], additional_special_tokens=special[1:])
    torch.manual_seed(0)
    model = build(preset, vocab_size=49152).eval()  # the preset's real vocabulary (LM-head cost)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight  # tied with the LM head in these presets
        emb[: len(special)] = 0  # logit 0: never the argmax among ~16k random logits
        emb[len(fast):] = 0  # rows the tokenizer does not have
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return out


def clip_prompts(model_dir: Path, prompts: list[str], n_tokens: int) -> tuple[list[str], list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = [tok(p).input_ids[-n_tokens:] for p in prompts]
    return [tok.decode(i) for i in ids], [len(tok(tok.decode(i)).input_ids) for i in ids]


def load_sequential(model_dir: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        ids = tok("def f():", return_tensors="pt").input_ids
        model.generate(ids, max_new_tokens=2, do_sample=False, pad_token_id=0)  # warm-up
    return model, tok


def sequential_generate(loaded: tuple[Any, Any], prompts: list[str], max_tokens: int, n: int,
                        offset: int = 0) -> dict[str, Any]:
    """`n` requests through `model.generate`, one after another (prompts from `offset`, as a server level)."""
    import torch

    model, tok = loaded
    lat, toks = [], 0
    with torch.inference_mode():
        t_all, c_all = time.perf_counter(), time.process_time()
        for i in range(n):
            ids = tok(prompts[(offset + i) % len(prompts)], return_tensors="pt").input_ids
            t = time.perf_counter()
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                 min_new_tokens=max_tokens, do_sample=False, pad_token_id=0)
            lat.append(time.perf_counter() - t)
            toks += out.shape[1] - ids.shape[1]
        wall, cpu = time.perf_counter() - t_all, time.process_time() - c_all
    lat.sort()
    return {"tok_s": toks / wall, "p50": statistics.median(lat), "p99": lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "requests": n, "cpu_ms_tok": 1000 * cpu / toks}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its waited-for children (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def start_server(cmd: list[str], ready: str, threads: int, timeout: float = 300) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "DOMAINFM_PROGRESS": "0", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line and proc.poll() is not None:
            raise RuntimeError(f"{cmd[:3]} exited with {proc.returncode}")
        if m := re.search(ready, line):
            # keep draining its output (request logs) so the server never blocks on a full pipe
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
            return proc, m.group(1)
    proc.kill()
    raise RuntimeError(f"{cmd[:3]} not ready after {timeout} s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


async def drive(url: str, model: str, prompts: list[str], max_tokens: int, clients: int, n: int,
                pid: int | None = None) -> dict[str, Any]:
    try:
        import httpx2 as httpx
    except ImportError:  # pragma: no cover
        import httpx
    sem = asyncio.Semaphore(clients)
    lat: list[float] = []
    toks: list[int] = []
    async with httpx.AsyncClient(timeout=3600, limits=httpx.Limits(max_connections=clients)) as client:
        async def one(i: int) -> None:
            async with sem:
                body = {"model": model, "prompt": prompts[i % len(prompts)], "max_tokens": max_tokens,
                        "temperature": 0}
                t = time.perf_counter()
                r = await client.post(url + "/v1/completions", json=body)
                lat.append(time.perf_counter() - t)
                r.raise_for_status()
                toks.append(int(r.json()["usage"]["completion_tokens"]))

        await one(0)  # warm-up
        lat.clear()
        toks.clear()
        c0 = cpu_seconds(pid) if pid else 0.0
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(pid) - c0 if pid else float("nan")
    lat.sort()
    return {"tok_s": sum(toks) / wall, "p50": statistics.median(lat), "p99": lat[min(len(lat) - 1,
            int(0.99 * len(lat)))], "requests": n, "forced_ok": all(t == max_tokens for t in toks),
            "cpu_ms_tok": 1000 * cpu / max(1, sum(toks))}


def median_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (preset, system, clients): the median over repeats of every figure."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in rows:
        if "error" not in r:
            groups.setdefault((r["preset"], r["system"], r["clients"]), []).append(r)
    out = []
    for (preset, system, c), rs in groups.items():
        med = {k: statistics.median(r[k] for r in rs) for k in ("tok_s", "p50", "p99", "cpu_ms_tok")}
        out.append({"preset": preset, "system": system, "clients": c, **med, "repeats": len(rs),
                    "forced_ok": all(r.get("forced_ok", True) for r in rs)})
    return out


def paired_ratios(rows: list[dict[str, Any]], ours: str, peers: list[str]) -> list[tuple[str, int, str, list[float]]]:
    """Per preset, clients level and peer: ours / peer tokens/s within each repeat (measured minutes apart at
    most, under the same load), so the median ratio is robust to the machine's load changing between repeats.
    The sequential baseline (one level) is paired with every level of the same repeat."""
    tok = {(r["preset"], r["system"], r["clients"], r["rep"]): r["tok_s"] for r in rows if "error" not in r}
    out = []
    keys = sorted({(k[0], k[2]) for k in tok if k[1] == ours})
    for preset, c in keys:
        for peer in peers:
            ratios = []
            for (p, s, cc, rep), v in tok.items():
                if p == preset and s == ours and cc == c:
                    other = tok.get((p, peer, 1 if peer == SEQUENTIAL else c, rep))
                    if other:
                        ratios.append(v / other)
            if ratios:
                out.append((preset, c, peer, ratios))
    return out


SEQUENTIAL = "sequential HF generate"
OURS = "domainfm serve"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--clients", default="1,4,16,64")
    ap.add_argument("--max-tokens", type=int, default=32, help="forced output length")
    ap.add_argument("--prompt-tokens", type=int, default=128, help="keep the last N tokens of each prompt")
    ap.add_argument("--prompts", type=int, default=64, help="HumanEval prompts used (in order)")
    ap.add_argument("--min-requests", type=int, default=8, help="requests per level at least")
    ap.add_argument("--sequential-requests", type=int, default=8)
    ap.add_argument("--peers", default="sequential,transformers-serve,transformers-serve-cb")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3,
                    help="interleaved repeats: every repeat measures every system at every level, systems in a "
                         "rotated order; tables give medians (the machine's load changes from minute to minute)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch/OpenMP threads of every system (1: on a shared, oversubscribed machine OpenMP's "
                         "spinning barriers make 2 threads up to 80x slower than 1)")
    args = ap.parse_args()
    # SIGTERM runs the `finally` blocks below: the (possibly SIGSTOPped) servers are resumed and ended
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    import torch

    torch.set_num_threads(args.threads)  # the sequential baseline, in this process
    clients = [int(c) for c in args.clients.split(",")]
    peers = args.peers.split(",")
    load = os.getloadavg()
    print(f"# {os.cpu_count()} CPUs, {args.threads} torch thread(s) per system, load average {load[0]:.1f} at "
          f"start; max_tokens {args.max_tokens}, {args.repeats} interleaved repeats, "
          f"prompts: last {args.prompt_tokens} tokens of the first {args.prompts} HumanEval prompts")
    rows: list[dict[str, Any]] = []
    for preset in args.presets.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = build_model(preset, Path(tmp) / preset)
            prompts, lens = clip_prompts(model_dir, humaneval_prompts(args.prompts), args.prompt_tokens)
            print(f"## {preset}: prompt tokens mean {statistics.mean(lens):.0f}", flush=True)
            systems = [(OURS, [sys.executable, "-m", "domainfm", "code", "serve", str(model_dir),
                               "--port", "0", "--max-batch", str(args.max_batch), "--max-queue", "1024"],
                        r"ready at (http://[\d.]+:\d+)/v1", preset)]
            tserve = [str(Path(sys.executable).parent / "transformers"), "serve", str(model_dir), "--device", "cpu"]
            if "transformers-serve" in peers:
                systems.append(("transformers serve", [*tserve, "--port", "8791"],
                                r"Uvicorn running on (http://\S+:\d+)", str(model_dir)))
            if "transformers-serve-cb" in peers:
                systems.append(("transformers serve --continuous-batching",
                                [*tserve, "--port", "8792", "--continuous-batching"],
                                r"Uvicorn running on (http://\S+:\d+)", str(model_dir)))
            # every server starts once and waits stopped (SIGSTOP) while another system is measured, so an idle
            # server's background threads cannot take CPU from the one being measured
            live: dict[str, tuple[subprocess.Popen, str, str]] = {}
            for name, cmd, ready, model_id in systems:
                try:
                    proc, url = start_server(cmd, ready, args.threads)
                    proc.send_signal(signal.SIGSTOP)
                    live[name] = (proc, url, model_id)
                except RuntimeError as exc:
                    rows.append({"preset": preset, "system": name, "error": str(exc)})
                    print(json.dumps(rows[-1]), flush=True)
            seq = load_sequential(model_dir) if "sequential" in peers else None
            try:
                for rep in range(args.repeats):
                    if seq is not None:
                        r = sequential_generate(seq, prompts, args.max_tokens, args.sequential_requests)
                        rows.append({"preset": preset, "system": SEQUENTIAL, "clients": 1, "rep": rep, **r})
                        print(json.dumps(rows[-1]), flush=True)
                    names = list(live)
                    names = names[rep % len(names):] + names[: rep % len(names)] if names else names
                    for c in clients:
                        for name in names:
                            proc, url, model_id = live[name]
                            proc.send_signal(signal.SIGCONT)
                            try:
                                r = asyncio.run(drive(url, model_id, prompts, args.max_tokens, c,
                                                      max(c, args.min_requests), pid=proc.pid))
                            except Exception as exc:  # a peer that fails under load: say so, keep going
                                r = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
                            finally:
                                proc.send_signal(signal.SIGSTOP)
                            rows.append({"preset": preset, "system": name, "clients": c, "rep": rep, **r})
                            print(json.dumps(rows[-1]), flush=True)
            finally:
                for proc, _, _ in live.values():
                    proc.send_signal(signal.SIGCONT)
                    stop_server(proc)
    print(f"# load average at end {os.getloadavg()[0]:.1f}")
    print(f"\nMedians over {args.repeats} interleaved repeats:\n\n| preset | system | clients | tokens/s | p50 s | "
          "p99 s | CPU ms / token | forced length |\n|---|---|---:|---:|---:|---:|---:|---|")
    for r in median_rows(rows):
        print(f"| {r['preset']} | {r['system']} | {r['clients']} | {r['tok_s']:.1f} | {r['p50']:.2f} | "
              f"{r['p99']:.2f} | {r['cpu_ms_tok']:.1f} | {r['forced_ok']} |")
    for r in rows:
        if "error" in r:
            print(f"| {r['preset']} | {r['system']} | {r.get('clients', '')} | error: {r['error']} | | | | |")
    peer_names = [SEQUENTIAL, "transformers serve", "transformers serve --continuous-batching"]
    print("\nPaired ratios, ours / peer tokens/s (median, and every repeat):\n\n| preset | clients | vs | median | "
          "repeats |\n|---|---:|---|---:|---|")
    for preset, c, peer, ratios in paired_ratios(rows, OURS, peer_names):
        print(f"| {preset} | {c} | {peer} | {statistics.median(ratios):.2f}x | "
              f"{', '.join(f'{x:.2f}' for x in ratios)} |")


if __name__ == "__main__":
    main()
