"""Debian's Chromium for the browser tests, installed with apt-get when it is missing.

Tests drive ``/usr/bin/chromium`` with Playwright; no browser build is ever downloaded by a
test tool. Installing needs root (or password-less sudo); when that or apt-get fails,
:func:`ensure_chromium` says why, and the browser tests skip with that reason.
``python -m deeptrust.devtools.browser`` (``make browser``) does the same from the shell.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
PACKAGES = ("chromium", "chromium-driver")
LAUNCH_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""Flags for a closed network (a new empty ``--user-data-dir`` too; Playwright's ``launch``
makes one itself): without the background-networking ones, Chromium dials
Google's hosts at every start and the machine refuses them, many at a time."""


class BrowserUnavailable(RuntimeError):
    """Chromium is not installed and could not be installed; the message says why."""


def _as_root(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return command
    if shutil.which("sudo") is None:
        raise BrowserUnavailable(
            f"{CHROMIUM} is missing; installing {' '.join(PACKAGES)} needs root, "
            "and this user is not root and has no sudo"
        )
    return ["sudo", "-n", *command]


def ensure_chromium(timeout_s: float = 900.0) -> Path:
    """Return Chromium's path, installing the Debian packages first when it is missing."""
    if CHROMIUM.exists():
        return CHROMIUM
    if shutil.which("apt-get") is None:
        raise BrowserUnavailable(f"{CHROMIUM} is missing and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = _as_root(["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES])

    def run(command: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=timeout_s, check=False
        )

    done = run(install)
    if done.returncode != 0:  # an empty package list on a new machine: refresh once
        run(_as_root(["apt-get", "update", "-qq"]))
        done = run(install)
    if done.returncode != 0 or not CHROMIUM.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise BrowserUnavailable(
            f"apt-get install {' '.join(PACKAGES)} failed: {' / '.join(tail) or 'no output'}"
        )
    return CHROMIUM


def main() -> None:
    """Install Chromium if needed; print its path, or the reason it cannot be had."""
    try:
        print(ensure_chromium())
    except BrowserUnavailable as error:
        print(f"no browser: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
