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

from deeptrust.training.canary.comparison import Comparison


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
class ProductionBaseline:
    """Which production model the job scored, and which one the registry names now.

    ``scored`` is the version recorded by the retrain job (None: it recorded none, because
    there was no production model then or the run predates the record); ``current`` is the
    version the ``production`` alias points at when the canary judges.
    """

    scored: str | None
    current: str | None

    @property
    def stale(self) -> bool:
        """Production exists now and is not the model the job compared the candidate with."""
        return self.current is not None and self.scored != self.current


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict, with why it went that way when the numbers alone do not say."""

    name: str
    passed: bool
    observed: float | None
    limit: float
    detail: str = ""

    def __str__(self) -> str:
        seen = "n/a" if self.observed is None else f"{self.observed:.4g}"
        text = f"{'PASS' if self.passed else 'FAIL'} {self.name}: {seen} (limit {self.limit:.4g})"
        return f"{text}: {self.detail}" if self.detail else text


def at_least(name: str, observed: float | None, limit: float) -> GateResult:
    """A gate passed by a measurement of at least ``limit``; without one it fails."""
    return GateResult(name, observed is not None and observed >= limit, observed, limit)


def at_most(name: str, observed: float | None, limit: float) -> GateResult:
    """A gate passed by a measurement of at most ``limit``; without one it fails."""
    return GateResult(name, observed is not None and observed <= limit, observed, limit)


def judge(
    gates: Gates,
    comparison: Comparison,
    offline: dict[str, float],
    baseline: ProductionBaseline,
) -> list[GateResult]:
    """Every gate on the evidence; a gate without evidence fails rather than passes.

    ``min_images_per_s = 0`` (the default) asks for nothing, so it passes without a
    measurement; any higher limit fails without one. The F1-vs-production gate needs the
    production model the job scored to still be production's: otherwise the delta compares
    against a model no longer serving, and the gate fails until the candidate is retrained
    or re-evaluated. Without any production model only ``min_f1`` applies, and its result
    says so.
    """
    rate = comparison.candidate_images_per_s
    if rate is None:
        off = gates.min_images_per_s <= 0
        throughput = GateResult(
            "images_per_s",
            off,
            None,
            gates.min_images_per_s,
            "not measured (the verdicts came in one batch)"
            + ("; the gate is off at 0" if off else ": no evidence"),
        )
    else:
        throughput = at_least("images_per_s", rate, gates.min_images_per_s)
    errors = at_most("error_rate", comparison.error_rate, gates.max_error_rate)
    if comparison.shared_dead_letters:
        errors = GateResult(
            errors.name,
            errors.passed,
            errors.observed,
            errors.limit,
            f"{comparison.shared_dead_letters} dead letter(s) production has no verdict on "
            "either, not counted",
        )
    f1 = offline.get("f1")
    f1_gate = at_least("f1", f1, gates.min_f1)
    results = [
        at_least("compared", float(comparison.compared), float(gates.min_compared)),
        errors,
        at_least("agreement", comparison.agreement, gates.min_agreement),
        at_most("mean_abs_shift", comparison.mean_abs_shift, gates.max_mean_abs_shift),
        throughput,
    ]
    if baseline.current is None:  # the first version has nothing to be compared with
        detail = "no production model to compare with: min_f1 is the only offline gate"
        return [*results, GateResult(f1_gate.name, f1_gate.passed, f1, f1_gate.limit, detail)]
    results.append(f1_gate)
    if baseline.stale:
        scored = f"version {baseline.scored}" if baseline.scored is not None else "no version"
        results.append(
            GateResult(
                "f1_delta",
                False,
                None,
                gates.min_f1_delta,
                "production changed since training: retrain or re-evaluate (the job "
                f"scored {scored} of production, production is version {baseline.current})",
            )
        )
        return results
    production_f1 = offline.get("production/f1")
    delta = None if f1 is None or production_f1 is None else f1 - production_f1
    results.append(at_least("f1_delta", delta, gates.min_f1_delta))
    return results
