"""How often the report's 95% intervals cover the truth, by simulation.

Run: ``.venv/bin/python bench/recall_coverage.py [--runs 4000]``; writes
``bench/results/recall_coverage.md``. Each run draws a review period the way the pipeline
makes one: ``N_f`` flagged images of which a share ``p_f`` are AI, ``N_u`` unflagged of
which ``p_u`` are AI; the router samples each unflagged image with probability ``rate``
(Bernoulli, as the hash draw is); reviewers decide a share ``reviewed`` of each lane, at
random. The report's estimators (``deeptrust.business.estimators``) are applied and each
interval is checked against the period's true value (flag precision, missed images,
recall). The recall interval takes the unflagged count ``n_s / rate`` as known, so its
coverage is what this measures.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from publish import publish

from deeptrust.business.estimators import Lane, recall, wilson

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "recall_coverage.md"


@dataclass(frozen=True)
class Scenario:
    """One review period's population and review effort."""

    flagged: int
    p_flagged: float
    unflagged: int
    p_unflagged: float
    rate: float
    reviewed: float


SCENARIOS = (
    Scenario(300, 0.90, 10_000, 0.010, 0.02, 1.0),
    Scenario(300, 0.90, 10_000, 0.010, 0.02, 0.5),
    Scenario(50, 0.70, 2_000, 0.050, 0.02, 1.0),
    Scenario(1_000, 0.95, 50_000, 0.002, 0.05, 0.3),
    Scenario(20, 0.80, 1_000, 0.030, 0.02, 1.0),
)


def coverage(s: Scenario, runs: int, rng: np.random.Generator) -> tuple[float, float, float, float]:
    """Shares of runs whose precision, missed-total and recall intervals cover the truth."""
    hits = np.zeros(3)
    defined = 0
    for _ in range(runs):
        ai_flagged = rng.random(s.flagged) < s.p_flagged
        ai_unflagged = rng.random(s.unflagged) < s.p_unflagged
        sampled = ai_unflagged[rng.random(s.unflagged) < s.rate]
        flagged_reviews = ai_flagged[rng.random(s.flagged) < s.reviewed]
        sample_reviews = sampled[rng.random(len(sampled)) < s.reviewed]
        f = Lane(s.flagged, len(flagged_reviews), int(flagged_reviews.sum()))
        u = Lane(len(sampled), len(sample_reviews), int(sample_reviews.sum()), s.rate)
        r = recall(f, u)
        precision = wilson(f.confirmed_ai, f.reviewed)
        missed = u.ai_total()
        if r is None or precision is None or missed is None:
            continue
        defined += 1
        true_tp, true_fn = int(ai_flagged.sum()), int(ai_unflagged.sum())
        truths = (true_tp / s.flagged, true_fn, true_tp / (true_tp + true_fn))
        for i, (interval, truth) in enumerate(zip((precision, missed, r), truths, strict=True)):
            hits[i] += interval.low <= truth <= interval.high
    return (*(hits / max(defined, 1)), defined / runs)


def main(argv: Sequence[str] | None = None) -> int:
    """Simulate each scenario and publish the coverage table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    lines = [
        "# Coverage of the business report's 95% intervals",
        "",
        f"`bench/recall_coverage.py --runs {args.runs} --seed {args.seed}`: the share of "
        "simulated review periods whose interval holds the period's true value.",
        "",
        "| flagged (AI share) | unflagged (AI share) | rate | reviewed | precision | missed "
        "| recall | runs with every estimate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in SCENARIOS:
        p, m, r, defined = coverage(s, args.runs, rng)
        lines.append(
            f"| {s.flagged} ({s.p_flagged}) | {s.unflagged} ({s.p_unflagged}) | {s.rate} "
            f"| {s.reviewed:.0%} | {p:.3f} | {m:.3f} | {r:.3f} | {defined:.1%} |"
        )
    publish(RESULTS, [*lines, ""])
    return 0


if __name__ == "__main__":
    sys.exit(main())
