"""Prometheus metrics of the serve process (one registry per app, so tests can build several apps).

The series every inference request touches — requests by route and status, request and inference latency, queue
depth — are plain numbers (``PlainCounter``, ``PlainHistogram``, ``PlainGauge``) that the registry reads at scrape
time, with the same names, labels, samples and values as prometheus_client's ``Counter``, ``Histogram`` and ``Gauge``
(their ``_created`` samples included): no lock and no checks per update. They are updated from the event loop only
(the serve process and a node each run their requests on one loop); the rest are prometheus_client's own.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar, cast

import prometheus_client.metrics
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

#: prometheus_client's text for a bucket bound ("+Inf", "0.005", "1.0"); its helper carries no annotations.
_bound_text = cast(Callable[[float], str], floatToGoString)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def _created_samples() -> bool:
    """Whether ``_created`` samples are published (prometheus_client's switch: ``disable_created_metrics()`` or
    ``PROMETHEUS_DISABLE_CREATED_SERIES``)."""
    return bool(getattr(prometheus_client.metrics, "_use_created", True))


class CounterSeries:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0
        self.created = time.time()

    def inc(self) -> None:
        self.value += 1


class HistogramSeries:
    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)  # per bucket, not cumulative (as prometheus_client keeps them)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.sum += amount
        self.counts[bisect_left(self.bounds, amount)] += 1  # the first bound >= amount; the last is +Inf


class GaugeSeries:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0


S = TypeVar("S", CounterSeries, HistogramSeries, GaugeSeries)


class _Plain(Collector, Generic[S]):
    """A labelled metric family kept as plain series objects, published when the registry is collected."""

    kind = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._series: dict[tuple[str, ...], S] = {}
        registry.register(self)

    def labels(self, *values: str) -> S:
        """The series of these label values (made on first use, as prometheus_client's ``labels``)."""
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = self._new()
        return series

    def _new(self) -> S:
        raise NotImplementedError

    def describe(self) -> list[Metric]:
        return [Metric(self.name, self.documentation, self.kind)]

    def _labels(self, values: tuple[str, ...]) -> dict[str, str]:
        return dict(zip(self.labelnames, values, strict=True))


class PlainCounter(_Plain[CounterSeries]):
    """``Counter(name, documentation, labelnames)`` as plain numbers: ``labels(...)`` gives a series to ``inc()``."""

    kind = "counter"

    def _new(self) -> CounterSeries:
        return CounterSeries()

    def collect(self) -> Iterator[Metric]:
        family = Metric(self.name, self.documentation, self.kind)
        created = _created_samples()
        for values, series in list(self._series.items()):
            labels = self._labels(values)
            family.add_sample(f"{self.name}_total", labels, float(series.value))
            if created:
                family.add_sample(f"{self.name}_created", labels, series.created)
        yield family


class PlainHistogram(_Plain[HistogramSeries]):
    """``Histogram(name, documentation, labelnames, buckets)`` as plain numbers."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        buckets: Sequence[float],
    ) -> None:
        bounds = tuple(float(b) for b in buckets)
        self.bounds = bounds if bounds[-1] == float("inf") else (*bounds, float("inf"))
        self._le = tuple(_bound_text(bound) for bound in self.bounds)
        super().__init__(name, documentation, labelnames, registry)

    def _new(self) -> HistogramSeries:
        return HistogramSeries(self.bounds)

    def collect(self) -> Iterator[Metric]:
        family = Metric(self.name, self.documentation, self.kind)
        created = _created_samples()
        for values, series in list(self._series.items()):
            labels = self._labels(values)
            total = 0.0
            for le, count in zip(self._le, list(series.counts), strict=True):
                total += count
                family.add_sample(f"{self.name}_bucket", {**labels, "le": le}, total)
            family.add_sample(f"{self.name}_count", labels, total)
            family.add_sample(f"{self.name}_sum", labels, series.sum)
            if created:
                family.add_sample(f"{self.name}_created", labels, series.created)
        yield family


class PlainGauge(_Plain[GaugeSeries]):
    """``Gauge(name, documentation, labelnames)`` as plain numbers: a series' ``value`` is set directly."""

    kind = "gauge"

    def _new(self) -> GaugeSeries:
        return GaugeSeries()

    def collect(self) -> Iterator[Metric]:
        family = Metric(self.name, self.documentation, self.kind)
        for values, series in list(self._series.items()):
            family.add_sample(self.name, self._labels(values), float(series.value))
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = PlainCounter("modelhost_requests", "HTTP requests served", ["method", "route", "status"], r)
        self.request_seconds = PlainHistogram(
            "modelhost_request_duration_seconds", "HTTP request latency", ["route"], r, buckets=LATENCY_BUCKETS
        )
        self.inference_seconds = PlainHistogram(
            "modelhost_inference_duration_seconds",
            "time from admission to worker answer",
            ["model"],
            r,
            buckets=LATENCY_BUCKETS,
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
        self.queue_depth = PlainGauge("modelhost_queue_depth", "requests waiting or running", ["model"], r)
        self.workers = Gauge("modelhost_workers", "live worker processes", registry=r)
