"""Prometheus metrics under `qwick:`, named as vLLM names them (`vllm/v1/metrics/loggers.py`).

Gauges and counters are read from the engine's `EngineStats` at scrape time, so they count every request
the engine ran; latency histograms are observed here, per request, as the client sees them. Each app owns
its registry, so several apps can live in one process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from qwick.engine.client import RequestDelta
from qwick.gates.decisions import Decision

PREFIX = "qwick:"
# vLLM's buckets
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
               40.0, 80.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
               480.0, 960.0, 1920.0, 7680.0)
# gates answer in milliseconds on a GPU, hundreds of them on a small CPU
GATE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServerMetrics:
    def __init__(self, model_name: str, engine_stats: Callable[[], Any]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_EngineCollector(model_name, engine_stats))
        labels = {"model_name": model_name}

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Any:
            return Histogram(PREFIX + name, doc, list(labels), buckets=buckets,
                             registry=self.registry).labels(**labels)

        self.ttft = histogram("time_to_first_token_seconds", "Time to first token, seconds.", TTFT_BUCKETS)
        self.itl = histogram("inter_token_latency_seconds", "Time between output steps, seconds.", ITL_BUCKETS)
        self.e2e = histogram("e2e_request_latency_seconds", "End-to-end request latency, seconds.", E2E_BUCKETS)
        self.model_name = model_name
        # gates (POST /v1/moderate, /classify, ...): label values are the server's own gate names and kinds, never
        # client text, so their number stays bounded (ad-hoc classify labels are not a label value)
        self.gate_requests = Counter(PREFIX + "gate_requests", "Gate decisions by gate, kind and outcome "
                                     "(allow / deny for moderation, ok otherwise, timeout).",
                                     ["model_name", "gate", "kind", "outcome"], registry=self.registry)
        self.gate_escalations = Counter(PREFIX + "gate_escalations", "Gate decisions flagged for escalation.",
                                        ["model_name", "gate"], registry=self.registry)
        self.gate_errors = Counter(PREFIX + "gate_errors", "Gate requests that failed (an error response), by "
                                   "endpoint.", ["model_name", "endpoint"], registry=self.registry)
        self.gate_latency = Histogram(PREFIX + "gate_latency_seconds", "Gate decision latency, seconds.",
                                      ["model_name", "gate", "kind"], buckets=GATE_BUCKETS, registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def timer(self) -> RequestTimer:
        return RequestTimer(self)

    def observe_gate(self, decision: Decision) -> None:
        outcome = "timeout" if decision.timed_out else decision.allow_word() or "ok"
        self.gate_requests.labels(self.model_name, decision.gate, decision.kind, outcome).inc()
        if decision.escalate:
            self.gate_escalations.labels(self.model_name, decision.gate).inc()
        self.gate_latency.labels(self.model_name, decision.gate, decision.kind).observe(decision.latency_ms / 1e3)

    def gate_failed(self, endpoint: str) -> None:
        self.gate_errors.labels(self.model_name, endpoint).inc()


class RequestTimer:
    """Observes one request's latencies: arrival -> first token -> each later step -> finish."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics
        self.arrival = time.perf_counter()
        self.last: float | None = None

    def observe(self, delta: RequestDelta) -> None:
        now = time.perf_counter()
        if any(d.token_ids for d in delta.deltas):
            if self.last is None:
                self.metrics.ttft.observe(now - self.arrival)
            else:
                self.metrics.itl.observe(now - self.last)
            self.last = now
        if delta.finished:
            self.metrics.e2e.observe(now - self.arrival)


class _EngineCollector(Collector):
    def __init__(self, model_name: str, engine_stats: Callable[[], Any]) -> None:
        self.model_name = model_name
        self.engine_stats = engine_stats

    def describe(self) -> list[Metric]:
        return []  # names are only known per scrape; the registry must not call collect() at registration

    def collect(self) -> Iterator[Metric]:
        stats = self.engine_stats()
        if stats is None:
            return
        label = [self.model_name]

        def family(kind: type, name: str, doc: str, value: float) -> Metric:
            metric = kind(PREFIX + name, doc, labels=["model_name"])
            metric.add_metric(label, value)
            return metric

        yield family(GaugeMetricFamily, "num_requests_running", "Requests in the running batch.", stats.num_running)
        yield family(GaugeMetricFamily, "num_requests_waiting", "Requests waiting to run.", stats.num_waiting)
        yield family(GaugeMetricFamily, "kv_cache_usage_perc", "KV-cache usage, 1 = full.", stats.kv_cache_usage)
        yield family(CounterMetricFamily, "prefix_cache_queries", "Prompt tokens looked up in the prefix cache.",
                     stats.prefix_cache_queries)
        yield family(CounterMetricFamily, "prefix_cache_hits", "Prompt tokens found in the prefix cache.",
                     stats.prefix_cache_hits)
        yield family(CounterMetricFamily, "prompt_tokens", "Prefilled prompt tokens (cache hits excluded).",
                     stats.prompt_tokens)
        yield family(CounterMetricFamily, "generation_tokens", "Generated tokens.", stats.generation_tokens)
        yield family(CounterMetricFamily, "num_preemptions", "Preempted sequences.", stats.num_preemptions)
        # speculative decoding (vLLM's counters; zero without speculative_config)
        yield family(CounterMetricFamily, "spec_decode_num_drafts", "Draft rounds verified.",
                     getattr(stats, "spec_decode_num_drafts", 0))
        yield family(CounterMetricFamily, "spec_decode_num_draft_tokens", "Draft tokens verified.",
                     getattr(stats, "spec_decode_num_draft_tokens", 0))
        yield family(CounterMetricFamily, "spec_decode_num_accepted_tokens", "Draft tokens accepted.",
                     getattr(stats, "spec_decode_num_accepted_tokens", 0))
        success = CounterMetricFamily(PREFIX + "request_success", "Finished requests by finish reason.",
                                      labels=["model_name", "finished_reason"])
        for reason, count in sorted(stats.requests_finished.items()):
            success.add_metric([self.model_name, reason], count)
        yield success
        if getattr(stats, "lora", None) is not None:  # vLLM's gauge: the value is the scrape time, the news in labels
            lora = stats.lora
            info = GaugeMetricFamily(PREFIX + "lora_requests_info", "Running stats on LoRA requests.",
                                     labels=["max_lora", "running_lora_adapters", "waiting_lora_adapters"])
            info.add_metric([str(lora.max_lora), ",".join(lora.running), ",".join(lora.waiting)], time.time())
            yield info
