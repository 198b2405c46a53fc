"""A background server process that outlives the command that started it.

The local Kafka broker and the local LLM server both run detached, with a pid file and a
log in their home directory, so ``up`` and ``down`` can be separate commands and a test
session can stop what it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DetachedProcess:
    """One named process with ``<home>/<name>.pid`` and ``<home>/<name>.log``."""

    home: Path
    name: str

    @property
    def log_file(self) -> Path:
        """Where the process writes its output."""
        return self.home / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        """Where its pid is kept."""
        return self.home / f"{self.name}.pid"

    def pid(self) -> int | None:
        """Return the pid if the process is running."""
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        return pid

    def spawn(self, command: Sequence[str], env: dict[str, str] | None = None) -> int:
        """Start ``command`` in its own session, appending to the log; return its pid."""
        self.home.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                list(command),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        self.pid_file.write_text(str(process.pid))
        return process.pid

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop gracefully (SIGTERM), killing the process if it does not exit in time."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.2)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the log, for error messages."""
        if not self.log_file.exists():
            return "(no log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])


def alive(pid: int) -> bool:
    """Tell whether ``pid`` still runs, reaping it if it is our exited child."""
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
