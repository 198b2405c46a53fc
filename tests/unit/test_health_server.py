"""The probe endpoints: liveness from the loop's heartbeat, readiness from the stage."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from deeptrust.streams.metrics import HealthServer, StageMetrics


@pytest.fixture
def metrics() -> StageMetrics:
    return StageMetrics("detect")


@contextmanager
def serve(metrics: StageMetrics, liveness_timeout_s: float) -> Iterator[str]:
    server = HealthServer(metrics, 0, liveness_timeout_s)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_a_stage_that_just_became_ready_is_alive_before_its_first_poll(metrics):
    with serve(metrics, liveness_timeout_s=60) as base:
        assert status(f"{base}/readyz") == 503
        metrics.set_ready(True)
        assert status(f"{base}/readyz") == 200
        assert status(f"{base}/healthz") == 200, "starting is not stalling"
        metrics.heartbeat()
        assert status(f"{base}/healthz") == 200


def test_a_ready_stage_that_stops_polling_is_reported_stalled(metrics):
    with serve(metrics, liveness_timeout_s=0.0) as base:
        metrics.set_ready(True)
        metrics.heartbeat()
        assert status(f"{base}/healthz") == 503
        metrics.set_ready(False)
        assert status(f"{base}/healthz") == 200, "a stopping stage is not restarted"
