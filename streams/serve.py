"""Run one service as a process: probe server up, SIGTERM and SIGINT finish the work in hand.

Every long-running command (``deeptrust stage run``, ``deeptrust alerts notify``) starts the
same way: a stop flag the signals set, the health and metrics server on its port, the
service until the flag is set, and the server down last so a probe never sees a dead port
while the service still runs. SIGUSR1 dumps every thread's stack to stderr, so a stalled
service can be looked into without stopping it.
"""

from __future__ import annotations

import faulthandler
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from deeptrust.streams.metrics import HealthServer, StageMetrics

log = logging.getLogger(__name__)

LIVENESS_GRACE_S = 60.0
"""How long the loop may go without polling before ``/healthz`` calls it stalled."""


def serve_until_signalled(
    metrics: StageMetrics,
    metrics_port: int,
    run: Callable[[threading.Event], None],
    max_wait_s: float,
) -> None:
    """Serve the probes and run ``run(stop)`` until SIGTERM or SIGINT sets ``stop``.

    A service that must stop (wrong settings, credentials or permissions; an instance id
    in use) raises :class:`~deeptrust.streams.kafka_errors.ServiceStopped`: the caller turns it into
    a plain message and a non-zero exit.
    """
    server = HealthServer(metrics, metrics_port, liveness_timeout_s=LIVENESS_GRACE_S + max_wait_s)
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: finishing the work in hand", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    # A stalled service is diagnosed in place: `kill -USR1 PID` prints every thread's stack
    # to stderr, even while the main thread is blocked inside librdkafka.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    server.start()
    try:
        run(stop)
    finally:
        server.stop()
