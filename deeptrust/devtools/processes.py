"""Start, watch and stop stage processes: what the demo and the integration tests share.

Each stage runs as its own process (``deeptrust stage run NAME``), as it does in a
Deployment, so that a test can kill one with SIGKILL and a demo shuts it down with SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families


class StageProcessError(RuntimeError):
    """A stage process failed to start or exited unexpectedly."""


@dataclass
class StageProcess:
    """One ``deeptrust stage run`` subprocess with its metrics port and log file.

    ``args`` runs another long-lived command that serves the same probe endpoints on
    ``--metrics-port`` (``alerts notify``, say) with the same bookkeeping.
    """

    name: str
    env: dict[str, str]
    metrics_port: int
    log_path: Path
    cpus: frozenset[int] | None = None
    """Pin the process to these CPUs (benchmarks measure a stage on one core)."""
    args: tuple[str, ...] = ()
    """The CLI arguments before ``--metrics-port``; empty means ``stage run NAME``."""
    program: tuple[str, ...] = (sys.executable, "-m", "deeptrust.cli")
    """What runs the CLI: this interpreter's, or an installed ``deeptrust`` script."""
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        """Spawn the process."""
        command = [
            *self.program,
            *(self.args or ("stage", "run", self.name)),
            *("--metrics-port", str(self.metrics_port)),
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cpus = self.cpus
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
            )

    @property
    def returncode(self) -> int | None:
        """The exit code, or ``None`` while it runs."""
        return None if self._process is None else self._process.poll()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Block until ``/readyz`` answers 200, or raise with the log's tail."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.returncode is not None:
                raise StageProcessError(
                    f"{self.name} exited ({self.returncode}):\n{self.log_tail()}"
                )
            if self.get("/readyz") == 200:
                return
            time.sleep(0.1)
        raise StageProcessError(f"{self.name} not ready after {timeout_s}s:\n{self.log_tail()}")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Scrape ``/metrics``: {(sample name, sorted labels): value}."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        """Return one sample's value from ``/metrics`` (0 when absent)."""
        wanted = tuple(sorted({"stage": self.name, **labels}.items()))
        return self.metrics().get((name, wanted), 0.0)

    def terminate(self, timeout_s: float = 30.0) -> int:
        """Ask the stage to stop (SIGTERM) and wait; kill it if it does not stop in time."""
        if self._process is None:
            return 0
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
        try:
            return self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return self.kill()

    def dump_stacks(self, timeout_s: float = 5.0) -> None:
        """Have the stage print every thread's stack into its log (SIGUSR1), to see a stall.

        Returns once the dump is in the log (or after ``timeout_s``).
        """
        if self._process is None or self._process.poll() is not None:
            return
        before = self._stack_dumps()
        self._process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout_s
        while self._stack_dumps() == before and time.monotonic() < deadline:
            time.sleep(0.05)

    def _stack_dumps(self) -> int:
        if not self.log_path.exists():
            return 0
        return self.log_path.read_text(errors="replace").count("most recent call first")

    def kill(self) -> int:
        """Kill the stage at once (SIGKILL), as a crash would."""
        if self._process is None:
            return 0
        self._process.kill()
        return self._process.wait()

    def log_tail(self, lines: int = 30) -> str:
        """Return the end of the stage's log."""
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def get(self, path: str) -> int:
        """Return the HTTP status of ``path`` on the stage's port (0 if it does not answer)."""
        try:
            url = f"http://127.0.0.1:{self.metrics_port}{path}"
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:  # an answer, only not a 2xx one
            return int(error.code)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0
