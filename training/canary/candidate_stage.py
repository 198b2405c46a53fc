"""The canary's candidate stage: ``deeptrust stage run detect`` (or caption) in a child process.

A child, not a thread: the candidate's model and Kafka clients go away when the replay ends,
and a crash in it cannot take the retrain service down. It serves its probes on a port the
OS picks (``--metrics-port 0``), since nothing scrapes it; the canary sees it work through
its output topics and sees it fail through its exit code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType


class CandidateStageFailed(RuntimeError):
    """The candidate's stage exited while the canary still waited on it."""


class CandidateStage:
    """Run ``stage`` with ``env`` over the canary's topics, logging to ``log_path``."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        stop_timeout_s: float = 30.0,
        stage: str = "detect",
    ) -> None:
        self._env = env
        self._stage = stage
        self._log_path = log_path
        self._stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> CandidateStage:
        command = [sys.executable, "-m", "deeptrust.cli", "stage", "run", self._stage]
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [*command, "--metrics-port", "0"],
                env={**os.environ, **self._env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def check_running(self) -> None:
        """Raise with the end of its log if the stage has exited."""
        if self._process is None or self._process.poll() is None:
            return
        tail = self._log_path.read_text(errors="replace").splitlines()[-30:]
        raise CandidateStageFailed(
            f"the candidate's {self._stage} stage exited ({self._process.returncode}):\n"
            + "\n".join(tail)
        )

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Ask it to stop (SIGTERM), and kill it if it has not stopped in time."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(self._stop_timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
