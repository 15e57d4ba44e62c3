"""The plain-number metrics publish exactly what prometheus_client's own classes publish for the same updates."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from modelhost.metrics import LATENCY_BUCKETS, Metrics, PlainCounter, PlainGauge, PlainHistogram


def _exposition(registry: CollectorRegistry) -> str:
    """The text exposition with the creation times (wall clock at the first update) blanked out."""
    return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", generate_latest(registry).decode())


def test_plain_metrics_publish_what_prometheus_client_publishes() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counter = PlainCounter("t_requests", "HTTP requests served", ["method", "route", "status"], ours)
    histogram = PlainHistogram("t_seconds", "latency", ["route"], ours, buckets=LATENCY_BUCKETS)
    gauge = PlainGauge("t_depth", "requests waiting or running", ["model"], ours)
    counter_ref = Counter("t_requests", "HTTP requests served", ["method", "route", "status"], registry=theirs)
    histogram_ref = Histogram("t_seconds", "latency", ["route"], buckets=LATENCY_BUCKETS, registry=theirs)
    gauge_ref = Gauge("t_depth", "requests waiting or running", ["model"], registry=theirs)
    observations = [0.0004, 0.001, 0.0042, 0.0025, 7.5, 300.0, 1e6, 0.0]
    for i, seconds in enumerate(observations):
        route = "/v1/embeddings" if i % 3 else "unmatched"
        status = "200" if i % 2 else "404"
        counter.labels("POST", route, status).inc()
        counter_ref.labels("POST", route, status).inc()
        histogram.labels(route).observe(seconds)
        histogram_ref.labels(route).observe(seconds)
        gauge.labels("m").value = i
        gauge_ref.labels("m").set(i)
    gauge.labels("idle")
    gauge_ref.labels("idle")

    assert _exposition(ours) == _exposition(theirs)
    assert ours.get_sample_value("t_seconds_bucket", {"route": "unmatched", "le": "0.001"}) == 1
    assert ours.get_sample_value("t_requests_total", {"method": "POST", "route": "unmatched", "status": "404"}) == 2
    assert ours.get_sample_value("t_depth", {"model": "m"}) == len(observations) - 1


def test_metrics_names_and_kinds_are_unchanged() -> None:
    text = generate_latest(Metrics().registry).decode()
    for line in (
        "# TYPE modelhost_requests_total counter",
        "# TYPE modelhost_request_duration_seconds histogram",
        "# TYPE modelhost_inference_duration_seconds histogram",
        "# TYPE modelhost_queue_depth gauge",
        "# HELP modelhost_queue_depth requests waiting or running",
    ):
        assert line in text
