"""One local MLflow tracking server and one Ray head per test session, for the training tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from deeptrust.devtools.local_broker import free_port

ROOT = Path(__file__).resolve().parents[2]

if TYPE_CHECKING:
    from deeptrust.devtools.mlflow_server import LocalTrackingServer
    from deeptrust.training.service.settings import TrainingSettings
    from deeptrust.training.trainer.cluster import RayCluster


@pytest.fixture(scope="session")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTrackingServer]:
    """Started on first use only: the main environment, without mlflow, never asks for it."""
    from deeptrust.devtools.mlflow_server import LocalTrackingServer

    server = LocalTrackingServer(tmp_path_factory.mktemp("mlflow"), port=free_port())
    server.start(timeout_s=180)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    """A local Ray head (4 CPUs) that finds this checkout, and the cluster a job is given."""
    from deeptrust.devtools.ray_cluster import LocalRayCluster
    from deeptrust.training.trainer.cluster import RayCluster

    head = LocalRayCluster(tmp_path_factory.mktemp("ray"), port=free_port(), cpus=4)
    head.start(env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    storage = tmp_path_factory.mktemp("ray-storage")
    yield RayCluster(head.address, str(storage), workers=2, max_failures=2)
    import ray

    ray.shutdown()
    head.stop()


def job_settings(
    tracking: LocalTrackingServer, folder: Path, config_text: str, **overrides: Any
) -> TrainingSettings:
    """A test job's settings, isolated from other tests' runs.

    Its own experiment, registered model, config file and work directory, on the session's
    tracking server.
    """
    from deeptrust.training.service.settings import TrainingSettings

    config = folder / "train.toml"
    config.write_text(config_text, encoding="utf-8")
    suffix = uuid.uuid4().hex[:8]
    fields: dict[str, Any] = {
        "tracking_uri": tracking.tracking_uri,
        "experiment": f"test-{suffix}",
        "registered_model": f"detector-{suffix}",
        "config": config,
        "include_feedback": False,
        "work_dir": folder / "training",
    }
    return TrainingSettings(**(fields | overrides))
