"""The interface every drift test implements, and how detectors are chosen and combined.

A detector is fitted on the reference window of one model version and then judges live
windows of the same size. The KL detector is built in; alibi-detect's KS test is an
optional second opinion (``pip install 'deeptrust[alibi]'``, Business Source Licence),
imported only when it is asked for. Several detectors can run on the same window: the
combined verdict is drift when ``any`` (more sensitive) or ``all`` (fewer false alarms) of
them say so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from deeptrust.drift.kl import DriftResult, KLConfig, KLDriftDetector
from deeptrust.drift.reduction import Matrix

Combine = Literal["any", "all"]


class DriftDetector(Protocol):
    """A two-sample test between the reference and a window, with a calibrated threshold."""

    @property
    def name(self) -> str:
        """The test's name, as reports carry it."""
        ...

    @property
    def false_alarm_rate(self) -> float:
        """The rate of false alarms on a stable stream the detector was set for."""
        ...

    def predict(self, window: Matrix) -> DriftResult:
        """Judge one window: higher statistics mean more drift."""
        ...


@dataclass(frozen=True)
class DetectorConfig:
    """What every detector needs to be fitted."""

    window_size: int
    false_alarm_rate: float
    n_components: int
    seed: int = 0


Factory = Callable[[Matrix, DetectorConfig], DriftDetector]


def _kl(reference: Matrix, config: DetectorConfig) -> DriftDetector:
    return KLDriftDetector(
        reference,
        KLConfig(
            n_components=config.n_components,
            window_size=config.window_size,
            false_alarm_rate=config.false_alarm_rate,
            seed=config.seed,
        ),
    )


def _alibi_ks(reference: Matrix, config: DetectorConfig) -> DriftDetector:
    from deeptrust.drift.alibi import AlibiKSDetector  # optional extra: imported only when chosen

    return AlibiKSDetector(reference, config.n_components, config.false_alarm_rate)


DETECTORS: dict[str, Factory] = {"kl-histogram": _kl, "alibi-ks": _alibi_ks}


def build_detectors(
    names: Sequence[str], reference: Matrix, config: DetectorConfig
) -> list[DriftDetector]:
    """Fit each named detector on ``reference``."""
    unknown = [name for name in names if name not in DETECTORS]
    if unknown or not names:
        raise ValueError(f"unknown drift detectors {unknown}; choose from {sorted(DETECTORS)}")
    return [DETECTORS[name](reference, config) for name in names]


def combined(results: Sequence[DriftResult], rule: Combine) -> bool:
    """The combined verdict of several detectors on one window."""
    verdicts = [result.is_drift for result in results]
    return any(verdicts) if rule == "any" else all(verdicts)
