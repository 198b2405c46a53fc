"""One local MLflow tracking server per test session, shared by the training tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from streams.local_broker import free_port

if TYPE_CHECKING:
    from training.tracking.local_server import LocalTrackingServer


@pytest.fixture(scope="session")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTrackingServer]:
    """Started on first use only: the main environment, without mlflow, never asks for it."""
    from training.tracking.local_server import LocalTrackingServer

    server = LocalTrackingServer(tmp_path_factory.mktemp("mlflow"), port=free_port())
    server.start(timeout_s=180)
    yield server
    server.stop()
