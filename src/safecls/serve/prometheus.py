"""Prometheus metrics, one registry per app (tests build many apps; the global registry would reject duplicates)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# LLM requests span milliseconds (tiny models, errors) to minutes (long CPU generations)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("safecls_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("safecls_request_latency_seconds", "Request latency (a stream: until [DONE])",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("safecls_time_to_first_token_seconds", "Streaming: time to the first content delta",
                              ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("safecls_prompt_tokens", "Prompt tokens of completed choices", registry=r)
        self.completion_tokens = Counter("safecls_completion_tokens", "Generated tokens of completed choices",
                                         registry=r)
        self.finish = Counter("safecls_finish_reason", "Finished choices by finish_reason", ["reason"], registry=r)
        self.interventions = Counter("safecls_interventions", "Safety interventions by kind", ["kind"], registry=r)
        self.flagged = Counter("safecls_moderation_flagged", "Moderation inputs flagged malicious", registry=r)
        self.moderated = Counter("safecls_moderation_inputs", "Moderation inputs scored", registry=r)
        self.queue_depth = Gauge("safecls_queue_depth", "Rows waiting for a batch", registry=r)
        self.running = Gauge("safecls_running_rows", "Rows in the batch now decoding", registry=r)
        self.batch_size = Histogram("safecls_batch_size", "Rows per engine batch", buckets=BATCH_BUCKETS, registry=r)
        self.batch_size_max = Gauge("safecls_batch_size_max", "Largest engine batch seen", registry=r)
        self.rejected = Counter("safecls_queue_rejected", "Rows refused because the queue was full (429)", registry=r)
        self._max_batch = 0

    def observe_batch(self, size: int) -> None:
        self.batch_size.observe(size)
        if size > self._max_batch:
            self._max_batch = size
            self.batch_size_max.set(size)

    def render(self) -> bytes:
        return generate_latest(self.registry)
