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

import httpx


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
        # The process leads its own session (see spawn), so its group holds any workers it
        # started; signalling the group leaves none behind.
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.2)
        if alive(pid):
            _signal_group(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def wait_http(self, url: str, timeout_s: float) -> str | None:
        """Poll ``url`` until it answers 200; return why not (exit or timeout), else None.

        Servers that answer HTTP (the LLM server, the tracking server) are ready when a
        cheap endpoint answers; the reason comes with the log's tail for the caller's error.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.pid() is None:
                return f"{self.name} exited:\n{self.log_tail()}"
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return None
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        return f"{self.name} not ready after {timeout_s}s:\n{self.log_tail()}"

    def wait_log(self, line: str, timeout_s: float) -> str | None:
        """Poll the log until it holds ``line``; return why not (exit or timeout), else None.

        For servers that say they are ready only in their output (a Ray head).
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.pid() is None:
                return f"{self.name} exited:\n{self.log_tail()}"
            if self.log_file.exists() and line in self.log_file.read_text(errors="replace"):
                return None
            time.sleep(0.25)
        return f"{self.name} not ready after {timeout_s}s:\n{self.log_tail()}"

    def log_tail(self, lines: int = 40) -> str:
        """The end of the log, for error messages."""
        if not self.log_file.exists():
            return "(no log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])


def _signal_group(pid: int, signum: int) -> None:
    """Signal ``pid``'s process group, or ``pid`` alone if it no longer leads one."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        os.kill(pid, signum)


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
