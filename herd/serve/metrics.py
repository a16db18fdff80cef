"""Prometheus metrics of a server: running/waiting requests, KV-cache usage, tokens, TTFT and per-token latency.

Each server has a registry of its own (no process-wide globals), rendered at `/metrics`.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from herd.serve.engine import Engine
from herd.serve.request import StepOutput

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServerMetrics:
    """The metrics of one engine; gauges are read from the engine when scraped."""

    def __init__(self, engine: Engine) -> None:
        self.registry = registry = CollectorRegistry()
        Gauge("herd_requests_running", "Requests in the running batch", registry=registry).set_function(
            lambda: engine.num_running
        )
        Gauge("herd_requests_waiting", "Requests queued for the batch", registry=registry).set_function(
            lambda: engine.num_waiting
        )
        Gauge("herd_kv_cache_usage_ratio", "Fraction of KV-cache blocks in use", registry=registry).set_function(
            lambda: engine.kv_usage
        )
        Gauge(
            "herd_prefix_cache_hit_tokens", "Prompt tokens served from the prefix cache so far", registry=registry
        ).set_function(lambda: engine.scheduler.cached_tokens)
        Gauge("herd_preemptions", "Requests preempted for want of KV blocks so far", registry=registry).set_function(
            lambda: engine.scheduler.preemptions
        )
        self.prompt_tokens = Counter("herd_prompt_tokens", "Prompt tokens received", registry=registry)
        self.generation_tokens = Counter("herd_generation_tokens", "Tokens generated", registry=registry)
        self.finished = Counter(
            "herd_requests_finished", "Requests finished, by reason", ["finish_reason"], registry=registry
        )
        self.ttft = Histogram(
            "herd_time_to_first_token_seconds", "Time from request to its first token",
            buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.tpot = Histogram(
            "herd_time_per_output_token_seconds", "Time between consecutive tokens of a request",
            buckets=LATENCY_BUCKETS, registry=registry,
        )

    def observe(self, out: StepOutput, *, first: bool, since: float) -> None:
        """Count one engine output, `since` being the request's start (first) or its previous output."""
        if out.token_id is not None:
            self.generation_tokens.inc()
            (self.ttft if first else self.tpot).observe(time.perf_counter() - since)
        if out.finish_reason:
            self.finished.labels(out.finish_reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
