"""What the business report is computed from: plain records, one per event that matters.

The topic reader (:mod:`deeptrust.business.topics`) builds these from ``moderation.v1``,
``feedback.v1``, ``detected.v1`` and ``search-interactions.v1``; tests and the console
build them directly. Everything here is pure: the grouping rules (which decision counts,
which impression a click belongs to) live in one place.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from deeptrust.business.estimators import Impression

Label = Literal["ai_generated", "real"]


@dataclass(frozen=True)
class Routed:
    """An image the moderation router sent to review, and in which lane."""

    image_id: str
    lane: Literal["flagged", "sampled"]
    at: datetime | None = None


@dataclass(frozen=True)
class Decision:
    """One reviewer's label for one image."""

    image_id: str
    reviewer: str
    label: Label
    at: datetime


@dataclass(frozen=True)
class Interaction:
    """A results page shown (``impression``) or a result clicked (``click``)."""

    session_id: str
    query: str
    kind: Literal["impression", "click"]
    at: datetime
    results: tuple[str, ...] = ()
    image_id: str | None = None
    rank: int | None = None


@dataclass(frozen=True)
class Observations:
    """Everything one report reads, with the sampling rate the router ran at."""

    sample_rate: float
    routed: Sequence[Routed] = ()
    decisions: Sequence[Decision] = ()
    interactions: Sequence[Interaction] = ()
    detected: Sequence[tuple[str, datetime]] | None = None
    """(image id, uploaded at) of every image detect saw, as a check of the population;
    ``None`` when ``detected.v1`` was not read."""
    skipped: Mapping[str, int] = field(default_factory=dict)
    """Records that did not decode, by topic: left out, and said so."""

    def until(self, moment: datetime) -> Observations:
        """The observations known at ``moment`` (routings without a time always are)."""
        return Observations(
            sample_rate=self.sample_rate,
            routed=[r for r in self.routed if r.at is None or r.at <= moment],
            decisions=[d for d in self.decisions if d.at <= moment],
            interactions=[i for i in self.interactions if i.at <= moment],
            detected=None
            if self.detected is None
            else [d for d in self.detected if d[1] <= moment],
            skipped=self.skipped,
        )

    def times(self) -> list[datetime]:
        """Every known event time, for choosing the points of a timeline."""
        return sorted(
            [r.at for r in self.routed if r.at is not None]
            + [d.at for d in self.decisions]
            + [i.at for i in self.interactions]
        )


def lanes(routed: Sequence[Routed]) -> dict[str, str]:
    """Image id -> lane; an image routed more than once keeps its latest lane."""
    ordered = sorted(routed, key=lambda r: (r.at is not None, r.at or datetime.min))
    return {r.image_id: r.lane for r in ordered}


def final_labels(decisions: Sequence[Decision]) -> dict[str, Label]:
    """Image id -> the label of its latest decision (what training reads too)."""
    return {d.image_id: d.label for d in sorted(decisions, key=lambda d: d.at)}


def reviewer_pairs(decisions: Sequence[Decision]) -> list[tuple[Label, Label]]:
    """(first reviewer's label, second reviewer's label) for images two people decided.

    Each reviewer counts once per image (their latest decision: a decision made twice is
    one decision); reviewers are ordered by when they decided, and a third one is ignored.
    """
    latest: dict[str, dict[str, Decision]] = defaultdict(dict)
    for d in sorted(decisions, key=lambda d: d.at):
        latest[d.image_id][d.reviewer] = d
    pairs: list[tuple[Label, Label]] = []
    for by_reviewer in latest.values():
        if len(by_reviewer) >= 2:
            first, second = sorted(by_reviewer.values(), key=lambda d: d.at)[:2]
            pairs.append((first.label, second.label))
    return pairs


def impressions(interactions: Sequence[Interaction]) -> tuple[list[Impression], int]:
    """Pages shown with the ranks clicked on each, and the number of clicks on no page.

    A click belongs to the latest impression of the same query in the same session shown
    at or before it. Its rank is the event's, else the clicked image's place on that page.
    """
    pages: list[tuple[Interaction, list[int]]] = []
    open_pages: dict[tuple[str, str], tuple[Interaction, list[int]]] = {}
    unmatched = 0
    order = {"impression": 0, "click": 1}
    for event in sorted(interactions, key=lambda i: (i.at, order[i.kind])):
        key = (event.session_id, event.query)
        if event.kind == "impression":
            open_pages[key] = (event, [])
            pages.append(open_pages[key])
            continue
        page = open_pages.get(key)
        rank = _rank(event, page[0]) if page else None
        if page is None or rank is None:
            unmatched += 1
            continue
        page[1].append(rank)
    return [Impression(len(shown.results), tuple(ranks)) for shown, ranks in pages], unmatched


def _rank(click: Interaction, page: Interaction) -> int | None:
    if click.rank is not None:
        return click.rank if 1 <= click.rank <= len(page.results) else None
    if click.image_id in page.results:
        return page.results.index(click.image_id) + 1
    return None
