"""A real one-machine Ray cluster for development and tests: ``ray start --head``, detached.

The retrain service reaches any Ray cluster by address (``DEEPTRUST_TRAINING_RAY_ADDRESS``);
this starts one on loopback so the Ray Train and Ray Tune paths run on this machine as they
would on a KubeRay cluster. ``--block`` keeps the head's processes (GCS, raylet, workers) in
the detached process's group, so ``down`` stops exactly what ``up`` started, never another
cluster on the machine. Ray's session files go to a short folder under /tmp (its socket
paths must stay under the kernel's 107 characters).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from deeptrust.devtools.detached import DetachedProcess

READY_LINE = "Ray runtime started"
OBJECT_STORE_BYTES = 512 * 1024 * 1024


class RayClusterError(RuntimeError):
    """The cluster could not be started."""


@dataclass(frozen=True)
class LocalRayCluster:
    """One Ray head on ``127.0.0.1:port`` declaring ``cpus`` CPUs, its pid and log in ``home``.

    Ray schedules by declared CPUs, not cores: a fine-tune's workers and Tune's trials each
    take one, so the default declares more than a 2-core machine has, and they share it.
    """

    home: Path
    port: int = 6380
    cpus: int = 6

    @property
    def address(self) -> str:
        """What ``ray.init`` and ``DEEPTRUST_TRAINING_RAY_ADDRESS`` take."""
        return f"127.0.0.1:{self.port}"

    @property
    def _process(self) -> DetachedProcess:
        return DetachedProcess(self.home, "ray")

    @property
    def _session_dir(self) -> Path:
        return Path(tempfile.gettempdir()) / f"deeptrust-ray-{self.port}"

    def pid(self) -> int | None:
        """The head's pid if it runs."""
        return self._process.pid()

    def start(self, env: dict[str, str] | None = None, timeout_s: float = 120.0) -> None:
        """Start the head unless it runs, and wait until it says it has started.

        ``env`` is added to the head's environment, which every worker inherits (a test
        puts its repository on ``PYTHONPATH`` there).
        """
        ray = Path(sys.executable).with_name("ray")
        if importlib.util.find_spec("ray") is None or not ray.exists():
            raise RayClusterError(
                "ray is not installed in this environment: install the 'train' extra "
                "(make builds it into .venv-train)"
            )
        if self.pid() is None:
            self._process.log_file.unlink(missing_ok=True)  # the ready line is this start's
            # Object store capped: the jobs pass datasets' references, not pixels.
            command = [
                str(ray),
                "start",
                "--head",
                "--block",
                "--node-ip-address",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--num-cpus",
                str(self.cpus),
                "--temp-dir",
                str(self._session_dir),
                "--include-dashboard",
                "false",
                "--object-store-memory",
                str(OBJECT_STORE_BYTES),
                "--disable-usage-stats",
            ]
            self._process.spawn(command, {**os.environ, **(env or {})})
        failure = self._process.wait_log(READY_LINE, timeout_s)
        if failure is not None:
            raise RayClusterError(failure)

    def stop(self) -> None:
        """Stop the head and everything it started; its session files go too."""
        self._process.stop(timeout_s=30)
        shutil.rmtree(self._session_dir, ignore_errors=True)
