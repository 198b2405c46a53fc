"""Choosing a probe's feature variant on the training families only (inner leave-one-out).

Which of a backbone's outputs transfers to unseen generators cannot be read off the
held-out family without leaking it into the choice. Instead the training families are held
out in turn *inside* the training set: for each one, a probe is fitted on the other training
families and on real crops of some training photographs, and scored by average precision on
that family against real crops of the remaining training photographs. The variant with the
best mean inner AP wins; the outer held-out family and the test photographs are never read.

Real crops are grouped by photograph (photographs sorted by name and dealt round-robin into
one group per inner fold), so an inner validation never sees a crop of a photograph it was
fitted on. No torch here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from deeptrust.training.detector.metrics import average_precision
from deeptrust.training.detector.probe import train_head

RESOLUTION = 1e-3
"""Inner APs closer than this count as tied."""


@dataclass(frozen=True)
class Candidate:
    """One variant's features of a training set: real crops and each family's images."""

    real: np.ndarray
    fakes: Mapping[str, np.ndarray]


def photo_groups(photos: Sequence[str], count: int) -> np.ndarray:
    """Each crop's group: its photograph's rank among the sorted names, modulo ``count``."""
    names = sorted(set(photos))
    if len(names) < count:
        raise ValueError(f"{len(names)} photographs cannot fill {count} groups")
    rank = {name: index % count for index, name in enumerate(names)}
    return np.array([rank[photo] for photo in photos], dtype=np.int64)


def inner_ap(candidate: Candidate, photos: Sequence[str], l2: float) -> dict[str, float]:
    """AP on each training family when it is held out of the probe's fit."""
    families = list(candidate.fakes)
    if len(families) < 2:
        raise ValueError("need at least two training families to hold one out")
    if len(photos) != len(candidate.real):
        raise ValueError("one photograph name per real crop")
    groups = photo_groups(photos, len(families))
    result = {}
    for index, held in enumerate(families):
        validation = groups == index
        others = [candidate.fakes[name] for name in families if name != held]
        x = np.concatenate([candidate.real[~validation], *others])
        y = np.r_[np.zeros(int((~validation).sum())), np.ones(sum(len(o) for o in others))]
        head = train_head(x, y, l2)
        result[held] = average_precision(
            head.logits(candidate.real[validation]), head.logits(candidate.fakes[held])
        )
    return result


def choose_variant(
    candidates: Mapping[str, Candidate], photos: Sequence[str], l2: float
) -> tuple[str, dict[str, float]]:
    """The variant with the best mean inner AP, and every mean.

    Means are compared to :data:`RESOLUTION`: below it a difference is noise at these set
    sizes (the easy toy families put every variant at 0.9999...), and a tie goes to the
    first listed, so a saturated comparison gives a stated default, not a float's last bit.
    """
    if not candidates:
        raise ValueError("no candidates")
    means = {
        name: float(np.mean(list(inner_ap(candidate, photos, l2).values())))
        for name, candidate in candidates.items()
    }
    order = list(candidates)
    best = max(order, key=lambda name: (round(means[name] / RESOLUTION), -order.index(name)))
    return best, means
