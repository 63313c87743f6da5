"""A bounded load test for a running server (loopback): N requests from C concurrent clients, mixed sizes,
a share malformed and a share cancelled mid-stream. Every well-formed greedy answer is compared with the
one-prompt `Generator` reference (what `domainfm code generate` prints).

    python -m domainfm.code.serve.loadtest MODEL_DIR --url http://127.0.0.1:8000 --requests 2000 --concurrency 64

Prints one JSON line: counts by HTTP status, wrong answers, 5xx, latency percentiles, the server's RSS before
and after and its batch state once idle (running, queue, KV-cache width: all 0 when nothing leaked).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

BAD_BODIES: list[bytes] = [
    b'{"model": "MODEL", "prompt": ',  # truncated JSON
    b'{"model": "MODEL", "prompt": "x", "max_tokens": -3}',
    b'{"model": "MODEL", "prompt": "x", "bogus_field": 1}',
    b'{"model": "nope", "prompt": "x"}',
    b'{"model": "MODEL", "prompt": "\xff\xfe"}',  # invalid UTF-8
    b'{"model": "MODEL", "prompt": "x", "max_tokens": 100000000}',
    b'{"model": "MODEL", "prompt": "x", "n": 100000}',
    b'[]',
]


def _httpx() -> Any:
    try:
        import httpx2 as httpx  # what the installed `openai` client is built on
    except ImportError:  # pragma: no cover
        import httpx
    return httpx


def make_specs(model_dir: Path, prompts: list[str], max_tokens: list[int]) -> list[dict[str, Any]]:
    """Greedy requests (completion and FIM) with their expected text from the one-prompt reference."""
    from domainfm.code.generate import GenerationConfig, Generator

    gen = Generator(model_dir)
    specs = []
    for i, p in enumerate(prompts):
        m = max_tokens[i % len(max_tokens)]
        cfg = GenerationConfig(max_new_tokens=m)
        if i % 3 == 2:
            cut = len(p) // 2
            spec = {"prompt": p[:cut], "suffix": p[cut:], "max_tokens": m}
            spec["expect"] = gen.infill([p[:cut]], [p[cut:]], cfg)[0][0]
        else:
            spec = {"prompt": p, "max_tokens": m, "expect": gen.complete([p], cfg)[0][0]}
        specs.append(spec)
    return specs


async def _one(client: Any, url: str, model: str, kind: str, spec: dict[str, Any], stream: bool,
               rng: random.Random) -> tuple[int, bool, float]:
    """(status, answer correct (or correctly refused / cancelled), seconds)."""
    t0 = time.monotonic()
    if kind == "bad":
        body = rng.choice(BAD_BODIES).replace(b"MODEL", model.encode())
        r = await client.post(url, content=body, headers={"content-type": "application/json"})
        return r.status_code, 400 <= r.status_code < 500, time.monotonic() - t0
    req = {"model": model, "temperature": 0, **{k: v for k, v in spec.items() if k != "expect"}}
    if kind == "cancel":
        req |= {"stream": True, "max_tokens": max(spec["max_tokens"], 32), "temperature": 0.7}
        async with client.stream("POST", url, json=req) as r:
            async for line in r.aiter_lines():
                if line.startswith("data:"):
                    break  # one chunk, then hang up
            return r.status_code, r.status_code == 200, time.monotonic() - t0
    if stream:
        text, status = "", 0
        async with client.stream("POST", url, json={**req, "stream": True}) as r:
            status = r.status_code
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    text += json.loads(line[6:])["choices"][0]["text"]
        return status, status == 200 and text == spec["expect"], time.monotonic() - t0
    r = await client.post(url, json=req)
    ok = r.status_code == 200 and r.json()["choices"][0]["text"] == spec["expect"]
    return r.status_code, ok, time.monotonic() - t0


async def run_load(base_url: str, model: str, specs: list[dict[str, Any]], n_requests: int = 200,
                   concurrency: int = 64, malformed: float = 0.05, cancelled: float = 0.05, seed: int = 0,
                   retries_on_429: int = 50) -> dict[str, Any]:
    httpx = _httpx()
    rng = random.Random(seed)
    url = base_url + "/v1/completions"
    plan = []
    for _ in range(n_requests):
        u = rng.random()
        kind = "bad" if u < malformed else "cancel" if u < malformed + cancelled else "good"
        plan.append((kind, rng.choice(specs), rng.random() < 0.3, random.Random(rng.random())))
    sem = asyncio.Semaphore(concurrency)
    statuses: dict[int, int] = {}
    wrong: list[dict[str, Any]] = []
    lat: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        health0 = (await client.get(base_url + "/health")).json()

        async def go(kind: str, spec: dict[str, Any], stream: bool, r: random.Random) -> None:
            async with sem:
                for _ in range(retries_on_429 + 1):
                    status, ok, dt = await _one(client, url, model, kind, spec, stream, r)
                    if status != 429:
                        break
                    await asyncio.sleep(0.2)
                statuses[status] = statuses.get(status, 0) + 1
                if not ok:
                    wrong.append({"kind": kind, "status": status, "prompt": spec["prompt"][:40]})
                if kind == "good":
                    lat.append(dt)

        t0 = time.monotonic()
        await asyncio.gather(*(go(*p) for p in plan))
        elapsed = time.monotonic() - t0
        health = {}
        for _ in range(100):  # cancelled rows leave at the next step boundary
            health = (await client.get(base_url + "/health")).json()
            if health["running"] == 0 and health["queue_depth"] == 0:
                break
            await asyncio.sleep(0.05)
    lat.sort()
    return {
        "requests": n_requests, "concurrency": concurrency, "seconds": round(elapsed, 2),
        "statuses": dict(sorted(statuses.items())), "wrong": len(wrong), "wrong_examples": wrong[:5],
        "server_errors": sum(v for k, v in statuses.items() if k >= 500),
        "kinds": {k: sum(p[0] == k for p in plan) for k in ("good", "bad", "cancel")},
        "latency_p50_s": round(statistics.median(lat), 3) if lat else None,
        "latency_p99_s": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 3) if lat else None,
        "rss_mb_before": health0.get("rss_mb"), "rss_mb_after": health.get("rss_mb"),
        "idle": {k: health.get(k) for k in ("running", "queue_depth", "cache_width")},
    }


def default_prompts() -> list[str]:
    """Real code of mixed lengths: pieces of the standard library's `json` and `textwrap` sources."""
    import inspect
    import json as json_mod
    import textwrap

    src = inspect.getsource(json_mod.dumps) + inspect.getsource(textwrap.dedent)
    return [src[a:a + n] for a, n in [(0, 10), (0, 40), (100, 60), (0, 120), (300, 200), (50, 300), (700, 80),
                                      (900, 250), (1200, 30), (1500, 160), (0, 5), (400, 100)]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--model", default=None, help="model id (default: the folder name)")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    specs = make_specs(args.model_dir, default_prompts(), [4, 8, 16, 32, 48])
    res = asyncio.run(run_load(args.url, args.model or args.model_dir.resolve().name, specs, args.requests,
                               args.concurrency, seed=args.seed))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
