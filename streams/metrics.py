"""Prometheus metrics and health endpoints for one stage process.

Each stage serves ``/metrics`` (Prometheus text format), ``/healthz`` (the processing loop
is alive) and ``/readyz`` (models are loaded and the consumer is running) on its own port.
Metrics live in a registry owned by the stage, never in a global.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from deeptrust.streams.errors import Reason

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class StageMetrics:
    """The counters and histograms every stage reports, labelled by stage name."""

    def __init__(self, stage: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.stage = stage
        labels = ["stage"]
        r = self.registry
        self._consumed = Counter("deeptrust_consumed", "Messages consumed.", labels, registry=r)
        self._produced = Counter(
            "deeptrust_produced", "Events produced (committed).", [*labels, "topic"], registry=r
        )
        self._dead_lettered = Counter(
            "deeptrust_dead_lettered", "Inputs sent to the DLQ.", [*labels, "reason"], registry=r
        )
        self._failed = Counter(
            "deeptrust_failed_batches",
            "Batch attempts that failed and were retried.",
            labels,
            registry=r,
        )
        self._recoveries = Counter(
            "deeptrust_recoveries",
            "Times the service lost its Kafka clients and re-created them, by cause.",
            [*labels, "cause"],
            registry=r,
        )
        self._batch_size = Histogram(
            "deeptrust_batch_size",
            "Messages per batch.",
            labels,
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self._stage_seconds = Histogram(
            "deeptrust_stage_seconds",
            "Seconds to prepare and process one batch.",
            labels,
            registry=r,
        )
        self._lag = Histogram(
            "deeptrust_upload_to_output_lag_seconds",
            "Seconds from upload to this stage's output.",
            labels,
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self._heartbeat = Gauge(
            "deeptrust_last_poll_timestamp_seconds",
            "When the loop last polled.",
            labels,
            registry=r,
        )
        self._ready = Gauge("deeptrust_ready", "1 once the stage is ready.", labels, registry=r)
        self._lag_messages = Gauge(
            "deeptrust_consumer_lag_messages",
            "Messages between the consumer's position and the partition's end.",
            [*labels, "partition"],
            registry=r,
        )
        self._is_ready = False
        self._last_poll: float | None = None
        self._ready_since: float | None = None
        # Export every counter at zero from the start: a series that first appears at 40
        # shows no increase to rate(), so the first burst would be invisible to alerts.
        self._consumed.labels(stage)
        self._failed.labels(stage)
        for reason in Reason:
            self._dead_lettered.labels(stage, reason.value)

    def consumed(self, count: int) -> None:
        """Count messages taken from the input topic."""
        self._consumed.labels(self.stage).inc(count)

    def produced(self, topic: str, count: int = 1) -> None:
        """Count events committed to ``topic``."""
        self._produced.labels(self.stage, topic).inc(count)

    def dead_lettered(self, reason: str) -> None:
        """Count one input sent to the dead-letter topic."""
        self._dead_lettered.labels(self.stage, reason).inc()

    def failed_batch(self) -> None:
        """Count one failed attempt at a batch."""
        self._failed.labels(self.stage).inc()

    def recovered(self, cause: str) -> None:
        """Count one re-creation of the clients after ``cause`` (a Kafka error's name)."""
        self._recoveries.labels(self.stage, cause).inc()

    def batch(self, size: int, seconds: float) -> None:
        """Record a batch's size and its processing time."""
        self._batch_size.labels(self.stage).observe(size)
        self._stage_seconds.labels(self.stage).observe(seconds)

    def lag(self, seconds: float) -> None:
        """Record the time from upload to this stage's output for one event."""
        self._lag.labels(self.stage).observe(seconds)

    def consumer_lag(self, partition: int, messages: int) -> None:
        """Record how far the consumer is behind on one partition."""
        self._lag_messages.labels(self.stage, str(partition)).set(messages)

    def heartbeat(self) -> None:
        """Mark the processing loop as alive."""
        self._last_poll = time.time()
        self._heartbeat.labels(self.stage).set(self._last_poll)

    def set_ready(self, ready: bool) -> None:
        """Mark the stage ready (or not) to process."""
        self._is_ready = ready
        self._ready_since = time.time() if ready else None
        self._ready.labels(self.stage).set(1 if ready else 0)

    def is_ready(self) -> bool:
        """Tell whether the stage said it is ready."""
        return self._is_ready

    def seconds_since_heartbeat(self) -> float:
        """Seconds since the loop last polled, or became ready; infinite before either."""
        # Before the first poll the loop is starting, not stalled: count from readiness.
        since = self._last_poll if self._last_poll is not None else self._ready_since
        return float("inf") if since is None else time.time() - since


class _ProbeServer(ThreadingHTTPServer):
    """The probe server, with a deeper accept queue than the default of 5.

    Kubelet probes and Prometheus scrapes may arrive together while the processing threads
    hold the CPUs.
    """

    request_queue_size = 64
    daemon_threads = True


class HealthServer:
    """Serves ``/metrics``, ``/healthz`` and ``/readyz`` from a daemon thread."""

    def __init__(self, metrics: StageMetrics, port: int, liveness_timeout_s: float) -> None:
        self._metrics = metrics
        self._liveness_timeout_s = liveness_timeout_s
        self._server = _ProbeServer(("0.0.0.0", port), self._handler())  # noqa: S104
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        """The port actually bound (useful when 0 asked for any free port)."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Start serving in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        routes: dict[str, Callable[[], tuple[int, bytes, str]]] = {
            "/metrics": self._metrics_page,
            "/healthz": self._liveness,
            "/readyz": self._readiness,
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path.split("?")[0])
                status, body, content_type = (
                    route() if route else (404, b"not found\n", "text/plain")
                )
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Keep scrapes out of the stage's log."""

        return Handler

    def _metrics_page(self) -> tuple[int, bytes, str]:
        return 200, generate_latest(self._metrics.registry), CONTENT_TYPE_LATEST

    def _liveness(self) -> tuple[int, bytes, str]:
        stale = self._metrics.seconds_since_heartbeat() > self._liveness_timeout_s
        if stale and self._metrics.is_ready():
            return 503, b"processing loop stalled\n", "text/plain"
        return 200, b"ok\n", "text/plain"

    def _readiness(self) -> tuple[int, bytes, str]:
        if self._metrics.is_ready():
            return 200, b"ready\n", "text/plain"
        return 503, b"not ready\n", "text/plain"
