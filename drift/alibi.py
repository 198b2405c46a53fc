"""alibi-detect's Kolmogorov-Smirnov test as a second opinion on the same windows.

alibi-detect is under the Business Source Licence (since 2024) and pins ``numpy<2``, so it
is an optional extra (``pip install 'deeptrust[alibi]'``) and this module is the only one
that imports it. The KS test runs per principal component of the reference (the same PCA
the KL detector uses) with a Bonferroni correction, so its false-alarm rate is at most the
stated one. Its verdict is reported on the same "higher means more drift" scale as KL:
the statistic is ``-log10`` of the smallest corrected p-value and the threshold is
``-log10`` of the false-alarm rate.
"""

from __future__ import annotations

import math

import numpy as np

from deeptrust.drift.kl import DriftResult
from deeptrust.drift.reduction import Matrix, Projection

try:
    from alibi_detect.cd import KSDrift
except ImportError as error:  # pragma: no cover - depends on the optional extra
    raise ImportError(
        "the alibi-ks detector needs the optional extra: pip install 'deeptrust[alibi]' "
        "(alibi-detect, Business Source Licence)"
    ) from error


class AlibiKSDetector:
    """Per-component KS tests (alibi-detect) on PCA scores of the reference."""

    name = "alibi-ks"

    def __init__(self, reference: Matrix, n_components: int, false_alarm_rate: float) -> None:
        reference = np.asarray(reference, dtype=np.float64)
        self.projection = Projection.fit(reference, n_components)
        self._false_alarm_rate = false_alarm_rate
        self._test = KSDrift(
            self.projection(reference).astype(np.float32),
            p_val=false_alarm_rate,
            correction="bonferroni",
        )

    @property
    def false_alarm_rate(self) -> float:
        """The stated false-alarm rate (an upper bound under Bonferroni)."""
        return self._false_alarm_rate

    def predict(self, window: Matrix) -> DriftResult:
        """Judge one window."""
        scores = self.projection(np.asarray(window, dtype=np.float64)).astype(np.float32)
        data = self._test.predict(scores, return_p_val=True, return_distance=True)["data"]
        p_values = np.asarray(data["p_val"], dtype=np.float64)
        corrected = min(1.0, float(p_values.min()) * len(p_values))
        return DriftResult(
            statistic=-math.log10(max(corrected, 1e-300)),
            threshold=-math.log10(self._false_alarm_rate),
            p_value=corrected,
            is_drift=bool(data["is_drift"]),
            window_size=len(scores),
            per_component=tuple(float(d) for d in np.asarray(data["distance"])),
        )
