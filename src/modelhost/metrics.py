"""Prometheus metrics of the serve process (one registry per app, so tests can build several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("modelhost_requests", "HTTP requests served", ["method", "route", "status"], registry=r)
        self.request_seconds = Histogram(
            "modelhost_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "modelhost_inference_duration_seconds",
            "time from admission to worker answer",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.worker_spawns = Counter("modelhost_worker_spawns", "worker processes started", ["model"], registry=r)
        self.worker_load_seconds = Histogram(
            "modelhost_worker_load_seconds",
            "spawn to READY (process start, imports, model load)",
            ["model"],
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
            registry=r,
        )
        self.worker_evictions = Counter(
            "modelhost_worker_evictions",
            "worker exits by reason: idle, stopped, evicted (memory admission), over_budget (memory watchdog), "
            "timeout, crash, startup",
            ["model", "reason"],
            registry=r,
        )
        self.gpu_lock_wait_seconds = Histogram(
            "modelhost_gpu_lock_wait_seconds",
            "time spent waiting for the GPU lock",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.gpu_swaps = Counter(
            "modelhost_gpu_swaps",
            "GPU hand-overs to another model: the exclusive GPU lock passing to another model, or (gpu_policy "
            "memory) a GPU worker evicted to load another",
            registry=r,
        )
        self.queue_depth = Gauge("modelhost_queue_depth", "requests waiting or running", ["model"], registry=r)
        self.workers = Gauge("modelhost_workers", "live worker processes", registry=r)
