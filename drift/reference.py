"""Reference windows, stored and versioned by the embedding model that produced them.

Embeddings of different models (or versions of one model) live in different spaces, so a
reference is only valid for the model version that made it: a new version starts a new
reference, collected from its first embeddings. References are written atomically as one
``.npz`` file per model version, with the image ids and a content digest beside the vectors.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Reference:
    """The reference embeddings of one model version."""

    model: str
    model_version: str
    vectors: np.ndarray
    image_ids: tuple[str, ...]

    @property
    def dimensions(self) -> int:
        """The length of each embedding."""
        return int(self.vectors.shape[1])

    @property
    def digest(self) -> str:
        """A short content hash, so reports can say exactly which reference they used."""
        hasher = hashlib.sha256(np.ascontiguousarray(self.vectors, dtype=np.float64).tobytes())
        hasher.update("\n".join(self.image_ids).encode())
        return hasher.hexdigest()[:16]


class ReferenceStore:
    """A directory of references, one file per (model, version)."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def _path(self, model: str, model_version: str) -> Path:
        return self._directory / f"{_UNSAFE.sub('_', model)}@{_UNSAFE.sub('_', model_version)}.npz"

    def load(self, model: str, model_version: str) -> Reference | None:
        """Return the stored reference of this model version, if there is one."""
        path = self._path(model, model_version)
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as data:
            return Reference(
                model=str(data["model"]),
                model_version=str(data["model_version"]),
                vectors=data["vectors"],
                image_ids=tuple(str(i) for i in data["image_ids"]),
            )

    def save(self, reference: Reference) -> Path:
        """Write ``reference`` atomically and return its path."""
        self._directory.mkdir(parents=True, exist_ok=True)
        path = self._path(reference.model, reference.model_version)
        partial = path.with_name(path.name + ".partial.npz")
        np.savez(
            partial,
            model=np.array(reference.model),
            model_version=np.array(reference.model_version),
            vectors=np.asarray(reference.vectors, dtype=np.float64),
            image_ids=np.array(reference.image_ids, dtype=str),
        )
        partial.replace(path)
        return path
