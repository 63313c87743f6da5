"""Prometheus metrics of one server (its own registry: two apps in one process never share counters)."""

from __future__ import annotations

from typing import Any


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge("domainfm_queue_depth", "sequences waiting for a batch slot", registry=r)
        self.running = Gauge("domainfm_running_batch_size", "sequences in the running batch", registry=r)
        self.generated_tokens = Counter("domainfm_generated_tokens", "tokens generated", registry=r)
        self.prompt_tokens = Counter("domainfm_prompt_tokens", "prompt tokens received", registry=r)
        self.requests = Counter("domainfm_requests", "completion requests answered, by HTTP status",
                                ["status"], registry=r)
        self.latency = Histogram("domainfm_request_latency_seconds", "completion request latency (arrival to "
                                 "last token)", registry=r,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def value(self, name: str, labels: dict[str, Any] | None = None) -> float | None:
        return self.registry.get_sample_value(name, labels or {})
