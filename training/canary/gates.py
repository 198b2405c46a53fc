"""The stated conditions a candidate must meet before it replaces production.

Offline gates compare test-set metrics logged by the retrain job (the candidate's against
production's on the same test images); online gates read the replay comparison. Each gate
reports what it saw and its limit, so a refused promotion says exactly why.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from training.canary.comparison import Comparison


class Gates(BaseModel):
    """Limits for promotion; read from the ``[gates]`` table of a TOML file or defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_compared: int = Field(default=1, ge=1, description="Replayed uploads seen by both.")
    max_error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    min_agreement: float = Field(
        default=0.8,
        ge=0.0,
        le=1.0,
        description="A new model may fix mistakes, but one that flips most verdicts on live "
        "traffic needs a person's look, not an automatic promotion.",
    )
    max_mean_abs_shift: float = Field(default=0.3, ge=0.0, le=1.0)
    min_images_per_s: float = Field(default=0.0, ge=0.0)
    min_f1_delta: float = Field(
        default=-0.02, description="Candidate test F1 minus production's, on the same images."
    )
    min_f1: float = Field(default=0.5, ge=0.0, le=1.0)

    @classmethod
    def load(cls, path: Path | None) -> Gates:
        """The gates in ``path`` (a ``[gates]`` table), or the defaults without a file."""
        if path is None:
            return cls()
        with path.open("rb") as handle:
            return cls.model_validate(tomllib.load(handle).get("gates", {}))


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict."""

    name: str
    passed: bool
    observed: float | None
    limit: float

    def __str__(self) -> str:
        seen = "n/a" if self.observed is None else f"{self.observed:.4g}"
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {seen} (limit {self.limit:.4g})"


def judge(gates: Gates, comparison: Comparison, offline: dict[str, float]) -> list[GateResult]:
    """Every gate on the evidence; a gate without evidence fails rather than passes."""

    def at_least(name: str, observed: float | None, limit: float) -> GateResult:
        return GateResult(name, observed is not None and observed >= limit, observed, limit)

    def at_most(name: str, observed: float | None, limit: float) -> GateResult:
        return GateResult(name, observed is not None and observed <= limit, observed, limit)

    f1 = offline.get("f1")
    production_f1 = offline.get("production/f1")
    delta = None if f1 is None or production_f1 is None else f1 - production_f1
    results = [
        at_least("compared", float(comparison.compared), float(gates.min_compared)),
        at_most("error_rate", comparison.error_rate, gates.max_error_rate),
        at_least("agreement", comparison.agreement, gates.min_agreement),
        at_most("mean_abs_shift", comparison.mean_abs_shift, gates.max_mean_abs_shift),
        at_least("images_per_s", comparison.candidate_images_per_s, gates.min_images_per_s),
        at_least("f1", f1, gates.min_f1),
    ]
    if production_f1 is not None:  # the first version has nothing to be compared with
        results.append(at_least("f1_delta", delta, gates.min_f1_delta))
    return results
