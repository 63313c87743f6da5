"""Schemathesis fuzzes the server's own OpenAPI schema (every route; bodies that fit the schema and bodies
that break it): no 5xx.

Bounded for CI (hypothesis `max_examples` per route and mode). Schemathesis' pytest plugin does not load
under this pytest, so the test drives its strategies directly. Half of the completion bodies get the served
model's name, so generation runs too (on a server with `max_tokens_limit` 8 to keep it quick)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = 30  # per route and mode


@pytest.mark.slow
def test_schema_fuzz_no_server_errors(serve_model: Path, live_server: Any) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation.modes import GenerationMode

    with live_server(serve_model, max_tokens_limit=8, max_batch=8, model_name="tiny") as srv:
        schema = schemathesis.openapi.from_url(srv.url + "/openapi.json")
        ops = [r.ok() for r in schema.get_all_operations()]
        assert {(op.method.upper(), op.path) for op in ops} >= {
            ("POST", "/v1/completions"), ("GET", "/v1/models"), ("GET", "/health"), ("GET", "/metrics")}
        seen: dict[tuple[str, int], int] = {}  # (path, status) -> count
        for op in ops:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                          database=None)
                @given(case=op.as_strategy(generation_mode=mode))
                def run(case: Any) -> None:
                    if isinstance(case.body, dict) and "model" in case.body and hash(str(case.body)) % 2:
                        case.body["model"] = "tiny"
                    resp = case.call_and_validate(checks=[not_a_server_error])
                    key = (case.operation.path, resp.status_code)
                    seen[key] = seen.get(key, 0) + 1

                try:
                    run()
                except Unsatisfiable:  # a GET without parameters has no invalid form
                    assert mode == GenerationMode.NEGATIVE and op.method.upper() == "GET"
        assert not [k for k in seen if k[1] >= 500], seen
        # completion bodies were both accepted (generation ran) and refused
        assert seen.get(("/v1/completions", 200), 0) > 0 and seen.get(("/v1/completions", 400), 0) > 0, seen
        # a finished or abandoned request leaves the batch at the engine's next step (asynchronously): wait for
        # it, so that only a real leak fails
        deadline = time.monotonic() + 30
        while srv.state.engine.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.state.engine.running == 0
