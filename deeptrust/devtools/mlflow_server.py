"""A real MLflow tracking server for development, tests and the demo.

SQLite holds experiments, runs and the model registry; a local folder holds artefacts,
served by the server itself (``--serve-artifacts``), so clients upload over HTTP and need no
access to the server's disk, as they would with a shared server. Any other tracking URI
(``DEEPTRUST_MLFLOW_TRACKING_URI``) replaces it in production. Runs detached, like the
local broker, so ``up`` and ``down`` are separate commands.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from deeptrust.devtools.detached import DetachedProcess


class TrackingServerError(RuntimeError):
    """The tracking server could not be started."""


@dataclass(frozen=True)
class LocalTrackingServer:
    """One ``mlflow server`` on a loopback port, with its store, pid and log in ``home``."""

    home: Path
    port: int = 5000

    @property
    def tracking_uri(self) -> str:
        """What clients set as their tracking URI."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def _process(self) -> DetachedProcess:
        return DetachedProcess(self.home, "mlflow")

    def pid(self) -> int | None:
        """The server's pid if it runs."""
        return self._process.pid()

    def start(self, timeout_s: float = 120.0) -> None:
        """Start the server unless it runs, and wait until ``/health`` answers."""
        if importlib.util.find_spec("mlflow") is None:
            raise TrackingServerError(
                "mlflow is not installed in this environment: install the 'train' extra "
                "(make builds it into .venv-train)"
            )
        if self.pid() is None:
            self.home.mkdir(parents=True, exist_ok=True)
            command = [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{(self.home / 'mlflow.db').resolve()}",
                "--artifacts-destination",
                str((self.home / "artifacts").resolve()),
                "--serve-artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ]
            # The server's job runner (huey workers, for GenAI evaluation jobs) is not used
            # here; off, it costs no processes and the server starts faster.
            env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
            self._process.spawn(command, env)
        failure = self._process.wait_http(f"{self.tracking_uri}/health", timeout_s)
        if failure is not None:
            raise TrackingServerError(failure)

    def stop(self) -> None:
        """Stop the server; its store stays for the next start."""
        self._process.stop(timeout_s=30)
