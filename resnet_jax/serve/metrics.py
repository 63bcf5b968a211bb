"""The service's Prometheus metrics, in a registry of its own (several services, or a test's,
in one process do not share counters)."""

from __future__ import annotations

import dataclasses

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclasses.dataclass
class Metrics:
    registry: CollectorRegistry
    received: Counter  # requests whose handling began (answered or not, yet)
    requests: Counter  # answered, by endpoint and status code
    latency: Histogram  # seconds, by endpoint
    batch_size: Histogram  # images per forward pass
    queue_depth: Gauge  # images waiting for a batch
    compilations_after_ready: Gauge  # lowerings since /readyz turned ready: 0 is the promise
    gallery_size: Gauge

    @classmethod
    def create(cls, max_batch_size: int) -> Metrics:
        registry = CollectorRegistry()
        sizes = sorted({1, 2, 4, 8, 16, 32, 64, 128, max_batch_size})
        return cls(
            registry,
            Counter("resnet_jax_requests_received", "Requests whose handling began",
                    registry=registry),
            Counter("resnet_jax_requests", "Requests answered, by endpoint and status code",
                    ["endpoint", "status"], registry=registry),
            Histogram("resnet_jax_request_latency_seconds", "Time to answer a request",
                      ["endpoint"], buckets=LATENCY_BUCKETS_S, registry=registry),
            Histogram("resnet_jax_batch_size", "Images per forward pass on the device",
                      buckets=[s for s in sizes if s <= max_batch_size], registry=registry),
            Gauge("resnet_jax_queue_depth", "Images waiting for a batch", registry=registry),
            Gauge("resnet_jax_compilations_after_ready",
                  "Computations compiled after the service turned ready", registry=registry),
            Gauge("resnet_jax_gallery_size", "Images in the searched gallery",
                  registry=registry))

    def totals(self) -> tuple[int, int]:
        """(requests received, requests answered) so far."""
        def total(counter):
            return int(sum(sample.value for metric in counter.collect()
                           for sample in metric.samples if sample.name.endswith("_total")))

        return total(self.received), total(self.requests)
