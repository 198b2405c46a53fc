"""Files from Debian packages, unpacked into the user's cache without installing anything.

Benchmarks and tests use real things that Debian packages: photographs
(``mate-backgrounds``) and Prometheus's binaries (``prometheus``: ``promtool`` and the
server). ``apt-get download`` fetches the ``.deb`` and ``dpkg-deb -x`` unpacks it under
``~/.cache/deeptrust/debian/<package>``, so nothing is installed system-wide, no service
starts, and the second use is offline.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from deeptrust.cache import CACHE_DIR

DEBIAN_CACHE = CACHE_DIR / "debian"


class DebianPackageError(RuntimeError):
    """The package could not be fetched or unpacked."""


def debian_package(package: str, cache: Path = DEBIAN_CACHE) -> Path:
    """Return the root of ``package``'s unpacked files, fetching them once."""
    root = cache / package
    if (root / ".complete").exists():
        return root
    downloads = cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    if not list(downloads.glob(f"{package}_*.deb")):
        fetched = subprocess.run(
            ["apt-get", "download", package], cwd=downloads, capture_output=True, text=True
        )
        if fetched.returncode != 0:  # an empty package list on a new machine: refresh once
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
            fetched = subprocess.run(
                ["apt-get", "download", package], cwd=downloads, capture_output=True, text=True
            )
        if fetched.returncode != 0:
            raise DebianPackageError(f"apt-get download {package} failed:\n{fetched.stderr}")
    (deb,) = sorted(downloads.glob(f"{package}_*.deb"))[-1:]
    if root.exists():
        shutil.rmtree(root)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, capture_output=True)
    (root / ".complete").touch()
    return root
