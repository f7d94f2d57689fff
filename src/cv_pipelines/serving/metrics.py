"""Prometheus metrics of one detection service, in a registry of its own (never the process-wide one).

``GET /metrics`` exposes:

- ``cv_serving_requests_total{endpoint, status, version, alias}``: every response;
- ``cv_serving_errors_total{endpoint, status, version, alias}``: those with a 4xx or 5xx;
- ``cv_serving_request_duration_seconds{endpoint, version, alias}``: latency histogram;
- ``cv_serving_images_total{version, alias}``: images sent to a model;
- ``cv_serving_queue_waiting`` / ``cv_serving_queue_running``: the worker queue now;
- ``cv_serving_model_info{model_name, version, alias}``: 1 per version served.

``version`` and ``alias`` are empty for a response no model gave (a refusal before the
model: bad request, unknown path, missing token, a full queue) and for ``/health``.
``endpoint`` is the route (``/predict``...), or ``other`` for a path that is none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cv_pipelines.serving.service import DetectionService

#: Latency buckets in seconds: a few ms (a small model on a small image) to a slow batch.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServingMetrics:
    """The service's counters and histograms: ``count`` and ``time`` record a response, ``render`` the exposition."""

    def __init__(self, service: DetectionService) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        labels = ["endpoint", "status", "version", "alias"]
        self.requests = Counter(
            "cv_serving_requests",
            "HTTP responses, by endpoint, status and model version",
            labels,
            registry=self.registry,
        )
        self.errors = Counter(
            "cv_serving_errors", "HTTP responses with a 4xx or 5xx status", labels, registry=self.registry
        )
        self.latency = Histogram(
            "cv_serving_request_duration_seconds",
            "Time from the request to its response, in seconds",
            ["endpoint", "version", "alias"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.images = Counter(
            "cv_serving_images", "Images sent to a model", ["version", "alias"], registry=self.registry
        )
        waiting = Gauge("cv_serving_queue_waiting", "Requests waiting for a worker", registry=self.registry)
        waiting.set_function(lambda: service.queue_depth[0])
        running = Gauge("cv_serving_queue_running", "Predictions running", registry=self.registry)
        running.set_function(lambda: service.queue_depth[1])
        info = Gauge(
            "cv_serving_model_info",
            "1 for each version served",
            ["model_name", "version", "alias"],
            registry=self.registry,
        )
        for model in service.models():
            info.labels(model.name, model.version, model.alias).set(1)

    def count(self, endpoint: str, status: int, version: str, alias: str, images: int = 0) -> None:
        """One response: counted (an error too when 4xx or 5xx), its images counted."""
        self.requests.labels(endpoint, str(status), version, alias).inc()
        if status >= 400:
            self.errors.labels(endpoint, str(status), version, alias).inc()
        if images:
            self.images.labels(version, alias).inc(images)

    def time(self, endpoint: str, version: str, alias: str, seconds: float) -> None:
        """One response's latency, from its request to its last byte."""
        self.latency.labels(endpoint, version, alias).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """(the text exposition, its content type)."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
