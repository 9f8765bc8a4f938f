"""The controller's Prometheus metrics, on a registry of their own (not the global one), so
several controllers can live in one test process and nothing else leaks into ``/metrics``.
"""

from __future__ import annotations

from vicuna_ops import adaptors

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class ControllerMetrics:
    """Counters the proxy and the registry update; worker gauges are filled at scrape time."""

    def __init__(self) -> None:
        prom = adaptors.require("prometheus_client")
        self._prom = prom
        self.registry = prom.CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = prom.Counter(
            "vops_requests", "API requests answered, by endpoint and HTTP status.",
            ["endpoint", "status"], registry=reg)
        self.latency = prom.Histogram(
            "vops_request_seconds", "Time from request to the last byte of the response.",
            ["endpoint"], buckets=_LATENCY_BUCKETS, registry=reg)
        self.first_byte = prom.Histogram(
            "vops_first_byte_seconds", "Time from request to the worker's first byte.",
            ["endpoint"], buckets=_LATENCY_BUCKETS, registry=reg)
        self.in_flight = prom.Gauge(
            "vops_in_flight", "API requests in progress in the controller.", registry=reg)
        self.retries = prom.Counter(
            "vops_retries", "Requests sent again to another worker, by reason.",
            ["reason"], registry=reg)
        self.resumes = prom.Counter(
            "vops_stream_resumes", "Streams continued on another worker after their worker "
            "failed mid-stream.", registry=reg)
        self.errors = prom.Counter(
            "vops_errors", "Requests that failed, by kind.", ["kind"], registry=reg)
        self.workers = prom.Gauge(
            "vops_workers", "Registered workers by state.", ["state"], registry=reg)
        self.worker_in_flight = prom.Gauge(
            "vops_worker_in_flight", "Requests in flight per worker, as the controller counts.",
            ["worker"], registry=reg)
        self.workers_dropped = prom.Counter(
            "vops_workers_dropped", "Workers dropped after missing heartbeats.", registry=reg)
        self.registrations = prom.Counter(
            "vops_worker_registrations", "Worker registrations accepted.", registry=reg)

    def refresh_workers(self, workers, now: float) -> None:
        counts = {"live": 0, "draining": 0, "suspect": 0}
        self.worker_in_flight.clear()
        for worker in workers:
            state = "suspect" if worker.down_until > now else worker.state
            counts[state] += 1
            self.worker_in_flight.labels(worker.worker_id).set(worker.in_flight)
        for state, count in counts.items():
            self.workers.labels(state).set(count)

    def render(self) -> tuple[bytes, str]:
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST
