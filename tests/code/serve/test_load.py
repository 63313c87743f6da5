"""A bounded load test on loopback (the CI size of the issue's 2,000 x 64 run, which docs/serve.md reports):
200 requests from 64 concurrent clients, mixed sizes, completion and FIM, some streamed, 5% malformed, 5%
cancelled mid-stream. Every well-formed answer equals the one-prompt reference, malformed ones are 4xx,
nothing is 5xx, and once idle the batch is empty (no KV-cache rows left) and memory is near its baseline."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from domainfm.code.serve.loadtest import default_prompts, make_specs, run_load


@pytest.mark.slow
def test_load_200_requests_64_clients(live: Any) -> None:
    specs = make_specs(live.state.cfg.model_dir, default_prompts(), [4, 8, 16, 32, 48])
    assert sum(bool(s["expect"]) for s in specs) >= 8
    warm = asyncio.run(run_load(live.url, "tiny", specs, n_requests=64, concurrency=64, seed=1))
    assert warm["wrong"] == 0 and warm["server_errors"] == 0, warm
    res = asyncio.run(run_load(live.url, "tiny", specs, n_requests=200, concurrency=64, seed=2))
    assert res["wrong"] == 0, res["wrong_examples"]
    assert res["server_errors"] == 0 and res["statuses"].get(200, 0) >= 170, res
    assert res["kinds"]["bad"] >= 3 and res["kinds"]["cancel"] >= 3
    assert res["idle"] == {"running": 0, "queue_depth": 0, "cache_width": 0}
    assert res["rss_mb_after"] - warm["rss_mb_after"] < 64, res  # no KV cache kept per request
    assert live.state.engine.peak_running >= 16  # the load really ran as large batches
