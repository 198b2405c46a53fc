"""Production's and the candidate's verdicts on the same uploads, side by side.

Pairs are made by event id: a detect stage derives its output id from the upload's, and
the replay keeps upload ids, so one id names both verdicts on one upload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from schemas.events import Detection


@dataclass(frozen=True)
class Comparison:
    """How the candidate differs from production on replayed traffic."""

    replayed: int
    compared: int
    """Uploads with a verdict from both models."""
    missing_in_production: int
    agreement: float
    """Share of compared uploads given the same label."""
    mean_shift: float
    """Mean of candidate minus production probability (signed: which way scores moved)."""
    mean_abs_shift: float
    max_abs_shift: float
    production_positive_rate: float
    candidate_positive_rate: float
    candidate_errors: int
    """Replayed uploads the candidate dead-lettered."""
    candidate_images_per_s: float | None
    """Throughput of the canary's detect stage, from its first to its last output."""

    @property
    def error_rate(self) -> float:
        """Dead-lettered share of the replayed uploads."""
        return self.candidate_errors / self.replayed if self.replayed else 0.0

    def metrics(self) -> dict[str, float]:
        """Flat numbers for the tracking server, ``canary/<name>``."""
        values = {k: v for k, v in asdict(self).items() if v is not None}
        values["error_rate"] = self.error_rate
        return {f"canary/{name}": float(value) for name, value in values.items()}


def compare(
    production: Mapping[str, Detection],
    candidate: Mapping[str, Detection],
    replayed: int,
    errors: int,
    images_per_s: float | None,
) -> Comparison:
    """Compare verdicts keyed by output event id."""
    shared = sorted(production.keys() & candidate.keys())
    ours = np.array([candidate[key].ai_probability for key in shared], np.float64)
    theirs = np.array([production[key].ai_probability for key in shared], np.float64)
    same = [candidate[key].label == production[key].label for key in shared]
    shift = ours - theirs
    empty = not shared
    return Comparison(
        replayed=replayed,
        compared=len(shared),
        missing_in_production=len(candidate.keys() - production.keys()),
        agreement=0.0 if empty else float(np.mean(same)),
        mean_shift=0.0 if empty else float(shift.mean()),
        mean_abs_shift=0.0 if empty else float(np.abs(shift).mean()),
        max_abs_shift=0.0 if empty else float(np.abs(shift).max()),
        production_positive_rate=0.0
        if empty
        else float(np.mean([production[key].label == "ai_generated" for key in shared])),
        candidate_positive_rate=0.0
        if empty
        else float(np.mean([candidate[key].label == "ai_generated" for key in shared])),
        candidate_errors=errors,
        candidate_images_per_s=images_per_s,
    )
