"""A model directory as one registered artefact: a reproducible tar.gz, and its safe unpacking.

The registry names an artefact by its SHA-256, and stages check that hash before loading,
so a directory (a ``save_pretrained`` ViT) travels as a single file. The archive is
byte-for-byte reproducible (sorted entries, no timestamps or owners), so packing the same
directory twice gives the same hash.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

SUFFIX = ".tar.gz"


def pack_directory(folder: Path) -> bytes:
    """The regular files under ``folder`` as a gzip'd tar, paths relative to ``folder``."""
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = tarfile.TarInfo(path.relative_to(folder).as_posix())
            info.size = path.stat().st_size
            info.mode = 0o644
            with path.open("rb") as handle:
                archive.addfile(info, handle)
    return buffer.getvalue()


def unpack_archive(data: bytes, folder: Path) -> Path:
    """Extract a :func:`pack_directory` archive into ``folder``; return ``folder``.

    The ``data`` filter refuses absolute paths, ``..``, links out of the folder and device
    files, so an archive cannot write outside ``folder`` whatever it holds.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        archive.extractall(folder, filter="data")
    return folder
