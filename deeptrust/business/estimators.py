"""The statistics behind the business metrics, on plain numbers: no Kafka, no events.

Each function states its estimator; ``docs/metrics.md`` gives the assumptions. Intervals
are two-sided at ``level`` (95% unless told).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval."""

    estimate: float
    low: float
    high: float


def z_value(level: float = LEVEL) -> float:
    """The standard normal quantile of a two-sided interval at ``level`` (1.96 at 95%)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), not {level}")
    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson(successes: int, trials: int, level: float = LEVEL) -> Interval | None:
    """Wilson's score interval for a binomial proportion; ``None`` with no trials.

    Chosen over the normal (Wald) interval because review counts are small and proportions
    near 0 or 1 (a precise detector): Wald collapses to a point at 0/n or n/n, Wilson keeps
    close to its nominal coverage there (Newcombe 1998).
    """
    if not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes}/{trials}")
    if trials == 0:
        return None
    z = z_value(level)
    p = successes / trials
    z2n = z * z / trials
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / trials + z2n / (4 * trials))
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Lane:
    """One review lane: how many images entered it, how many were reviewed, how many AI.

    ``inclusion`` is the probability that an image of the population the lane stands for
    entered it: 1 for the flagged lane (every flagged image), the sampling rate for the
    sample of unflagged images.
    """

    entered: int
    reviewed: int
    confirmed_ai: int
    inclusion: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.confirmed_ai <= self.reviewed <= self.entered:
            raise ValueError(f"need 0 <= confirmed_ai <= reviewed <= entered: {self}")
        if not 0.0 < self.inclusion <= 1.0:
            raise ValueError(f"inclusion must lie in (0, 1], not {self.inclusion}")

    @property
    def population(self) -> float:
        """Horvitz-Thompson estimate of the images the lane stands for: entered / inclusion."""
        return self.entered / self.inclusion

    @property
    def weight(self) -> float | None:
        """How many images of the population one reviewed image stands for.

        The inverse of its inclusion probability, which has two phases: entering the lane
        (``inclusion``) and then being reviewed (``reviewed / entered``).
        """
        return None if self.reviewed == 0 else self.population / self.reviewed

    def ai_share(self, level: float = LEVEL) -> Interval | None:
        """Share of the lane's images that are AI-generated, Wilson interval."""
        return wilson(self.confirmed_ai, self.reviewed, level)

    def ai_total(self, level: float = LEVEL) -> Interval | None:
        """Horvitz-Thompson total of AI images in the population: confirmed_ai x weight.

        The interval is the Wilson interval of the share scaled by the population estimate,
        which it takes as fixed.
        """
        share = self.ai_share(level)
        if share is None:
            return None
        n = self.population
        return Interval(share.estimate * n, share.low * n, share.high * n)


def recall(flagged: Lane, sampled: Lane, level: float = LEVEL) -> Interval | None:
    """The detector's recall: AI images flagged / all AI images, estimated from both lanes.

    TP = flagged population x flagged AI share, FN = unflagged population (estimated by
    Horvitz-Thompson from the sample and its rate) x sampled AI share. Recall rises with
    the first share and falls with the second, so the image of a confidence box on the two
    shares bounds it. The two lanes' reviews are independent samples, so Wilson intervals
    at ``sqrt(level)`` each give a box that covers both true shares with probability at
    least ``level`` (conditional on the population counts), and so the interval covers
    recall at least that often. ``None`` when a lane has no reviews or no AI image is
    estimated at all.
    """
    joint = math.sqrt(level)
    f = flagged.ai_share(joint)
    s = sampled.ai_share(joint)
    f_point = flagged.ai_share(level)
    s_point = sampled.ai_share(level)
    if f is None or s is None or f_point is None or s_point is None:
        return None
    estimate = _recall(flagged.population, f_point.estimate, sampled.population, s_point.estimate)
    if estimate is None:
        return None
    low = _recall(flagged.population, f.low, sampled.population, s.high)
    high = _recall(flagged.population, f.high, sampled.population, s.low)
    return Interval(estimate, 0.0 if low is None else low, 1.0 if high is None else high)


def miss_rate(flagged: Lane, sampled: Lane, level: float = LEVEL) -> Interval | None:
    """Share of AI images the detector did not flag: 1 - recall, with the mirrored interval."""
    r = recall(flagged, sampled, level)
    return None if r is None else Interval(1 - r.estimate, 1 - r.high, 1 - r.low)


def _recall(
    n_flagged: float, p_flagged: float, n_unflagged: float, p_unflagged: float
) -> float | None:
    true_positives = n_flagged * p_flagged
    total = true_positives + n_unflagged * p_unflagged
    return None if total == 0 else true_positives / total


@dataclass(frozen=True)
class Agreement:
    """How often two reviewers of one image agreed, raw and corrected for chance."""

    pairs: int
    percent: float
    kappa: float | None
    """Cohen's kappa; ``None`` when chance agreement is 1 (every decision the same label)."""


def agreement(pairs: Sequence[tuple[str, str]]) -> Agreement | None:
    """Percent agreement and Cohen's kappa of (first decision, second decision) pairs.

    kappa = (p_o - p_e) / (1 - p_e), with p_e from each position's own label frequencies
    (Cohen 1960). ``None`` with no pairs.
    """
    if not pairs:
        return None
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    labels = {label for pair in pairs for label in pair}
    expected = sum(
        (sum(a == label for a, _ in pairs) / n) * (sum(b == label for _, b in pairs) / n)
        for label in labels
    )
    kappa = None if expected == 1 else (observed - expected) / (1 - expected)
    return Agreement(n, observed, kappa)


@dataclass(frozen=True)
class Impression:
    """One results page shown: its ranked results and the 1-based ranks clicked, in order."""

    results: int
    clicked_ranks: tuple[int, ...] = ()


@dataclass(frozen=True)
class SearchMetrics:
    """Search quality as users saw it."""

    impressions: int
    zero_result_rate: Interval | None
    click_through_rate: Interval | None
    """Share of impressions with results that got at least one click."""
    mean_reciprocal_rank: float | None
    """Mean of 1 / rank of the first click over impressions with results (0 if none)."""


def search_metrics(impressions: Sequence[Impression], level: float = LEVEL) -> SearchMetrics:
    """Zero-result rate over all impressions; click-through and MRR over those with results.

    A page with no results cannot be clicked: counting it in click-through would measure
    the index's coverage twice, so the zero-result rate alone reports it.
    """
    shown = [i for i in impressions if i.results > 0]
    clicked = sum(1 for i in shown if i.clicked_ranks)
    reciprocal = [1 / i.clicked_ranks[0] if i.clicked_ranks else 0.0 for i in shown]
    return SearchMetrics(
        impressions=len(impressions),
        zero_result_rate=wilson(len(impressions) - len(shown), len(impressions), level),
        click_through_rate=wilson(clicked, len(shown), level),
        mean_reciprocal_rank=sum(reciprocal) / len(shown) if shown else None,
    )
