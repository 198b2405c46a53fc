"""PCA fitted on the reference window: the space in which drift is measured.

Embeddings have hundreds of correlated dimensions; a handful of principal components of the
reference carry most of their variance, decorrelate them, and make per-component density
estimates cheap and well populated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Matrix = np.ndarray


@dataclass(frozen=True)
class Projection:
    """Centre, principal axes and scales learned from a reference."""

    mean: Matrix
    axes: Matrix
    scales: Matrix

    @classmethod
    def fit(cls, reference: Matrix, n_components: int) -> Projection:
        """Fit ``n_components`` principal axes to ``reference`` (rows are embeddings)."""
        if reference.ndim != 2 or len(reference) < 2:
            raise ValueError("the reference needs at least two embeddings, one per row")
        n_components = min(n_components, reference.shape[1], len(reference) - 1)
        mean = reference.mean(axis=0)
        _, singular_values, axes = np.linalg.svd(reference - mean, full_matrices=False)
        scales = singular_values[:n_components] / np.sqrt(len(reference) - 1)
        return cls(mean=mean, axes=axes[:n_components], scales=np.maximum(scales, 1e-12))

    @property
    def n_components(self) -> int:
        """How many components the projection keeps."""
        return int(self.axes.shape[0])

    def __call__(self, embeddings: Matrix) -> Matrix:
        """Project ``embeddings`` to unit-variance (on the reference) component scores."""
        projected: Matrix = (np.asarray(embeddings) - self.mean) @ self.axes.T / self.scales
        return projected
