"""The business report from observations built by hand: grouping rules, rows, gauges, PNGs."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deeptrust.business.exporter import BusinessGauges
from deeptrust.business.observations import (
    Decision,
    Interaction,
    Observations,
    Routed,
    impressions,
    reviewer_pairs,
)
from deeptrust.business.plots import write_plots
from deeptrust.business.report import build_report, business_rows, timeline

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def observations() -> Observations:
    """10 flagged (5 reviewed: 4 AI, 1 real), 8 sampled at 0.2 (4 reviewed: 1 AI)."""
    routed = [Routed(f"f{i}", "flagged", at(i)) for i in range(1, 11)]
    routed += [Routed(f"s{i}", "sampled", at(i)) for i in range(1, 9)]
    decisions = [Decision(f"f{i}", "alice", "ai_generated", at(20 + i)) for i in range(1, 5)]
    decisions += [
        Decision("f1", "alice", "ai_generated", at(40)),  # the same decision again
        Decision("f5", "alice", "ai_generated", at(25)),
        Decision("f5", "bob", "real", at(30)),  # the latest decision wins: real
        Decision("s1", "alice", "ai_generated", at(31)),
        Decision("s2", "alice", "real", at(32)),
        Decision("s2", "bob", "real", at(33)),
        Decision("s3", "alice", "real", at(34)),
        Decision("s4", "alice", "real", at(35)),
        Decision("elsewhere", "alice", "ai_generated", at(36)),  # never routed: ignored
    ]
    interactions = [
        Interaction("A", "cat", "impression", at(50), results=("a", "b", "c")),
        Interaction("A", "cat", "click", at(51), image_id="b"),
        Interaction("A", "cat", "impression", at(52), results=("a", "b")),
        Interaction("B", "dog", "impression", at(53)),
        Interaction("C", "cat", "click", at(54), image_id="a", rank=1),  # no page shown
    ]
    detected = [(f"img{i}", at(0)) for i in range(32)] + [(f"f{i}", at(0)) for i in range(1, 11)]
    detected += [(f"s{i}", at(0)) for i in range(1, 9)]
    return Observations(0.2, routed, decisions, interactions, detected, {"t.moderation.v1": 2})


def test_report_worked_by_hand() -> None:
    report = build_report(observations())
    # Flagged: 10 entered, 5 reviewed, 4 AI (f5's latest decision is "real").
    assert (report.flagged.entered, report.flagged.reviewed, report.flagged.confirmed_ai) == (
        10,
        5,
        4,
    )
    assert report.precision is not None
    assert report.precision.estimate == pytest.approx(0.8)
    # Sampled: 8 entered at 0.2 -> 40 unflagged; 1 AI of 4 reviewed -> 10 missed.
    assert report.sampled.population == pytest.approx(40.0)
    assert report.missed is not None
    assert report.missed.estimate == pytest.approx(10.0)
    # TP = 10 x 0.8 = 8; recall = 8 / (8 + 10).
    assert report.recall is not None
    assert report.recall.estimate == pytest.approx(8 / 18)
    assert report.detected == 50
    assert report.unflagged_seen == 40
    # Pairs: f5 (ai, real), s2 (real, real): 50% agreement; p_e = 0.5*0 + 0.5*1, kappa 0.
    assert report.agreement is not None
    assert report.agreement.pairs == 2
    assert report.agreement.percent == pytest.approx(0.5)
    assert report.agreement.kappa == pytest.approx(0.0)
    # Search: 3 pages, one empty; of the 2 with results one was clicked at rank 2.
    assert report.search.impressions == 3
    assert report.search.zero_result_rate is not None
    assert report.search.zero_result_rate.estimate == pytest.approx(1 / 3)
    assert report.search.click_through_rate is not None
    assert report.search.click_through_rate.estimate == pytest.approx(0.5)
    assert report.search.mean_reciprocal_rank == pytest.approx(0.25)
    assert report.unmatched_clicks == 1


def test_rows_show_every_metric_formatted() -> None:
    rows = dict(business_rows(build_report(observations())))
    assert rows["flagged images (reviewed / entered)"] == "5 / 10"
    assert rows["flag precision (Wilson 95%)"].startswith("80.0% [")
    assert rows["unflagged images seen on detected.v1 (check)"] == "40"
    assert rows["mean reciprocal rank of the first click"] == "0.250"
    assert rows["reviewer agreement (pairs, percent, Cohen's kappa)"] == "2, 50.0%, kappa 0.00"
    assert rows["records skipped on t.moderation.v1 (not decodable)"] == "2"


def test_rows_say_n_a_before_any_review() -> None:
    rows = dict(business_rows(build_report(Observations(0.1, [Routed("f", "flagged")]))))
    assert rows["flag precision (Wilson 95%)"] == "n/a"
    assert rows["recall (95%, Wilson box)"] == "n/a"
    assert "unflagged images seen on detected.v1 (check)" not in rows


def test_reviewer_pairs_count_each_reviewer_once_in_decision_order() -> None:
    decisions = [
        Decision("x", "bob", "real", at(2)),
        Decision("x", "alice", "ai_generated", at(1)),
        Decision("x", "alice", "ai_generated", at(3)),  # alice again: still one reviewer
        Decision("x", "carol", "real", at(4)),  # a third reviewer is ignored
        Decision("y", "alice", "real", at(1)),
    ]
    # alice's latest decision (at 3) now comes after bob's (at 2).
    assert reviewer_pairs(decisions) == [("real", "ai_generated")]


def test_a_click_belongs_to_the_latest_page_of_its_query_and_session() -> None:
    pages, unmatched = impressions(
        [
            Interaction("A", "cat", "impression", at(0), results=("a", "b")),
            Interaction("A", "cat", "impression", at(5), results=("b", "a", "c")),
            Interaction("A", "cat", "click", at(6), image_id="c"),
            Interaction("A", "cat", "click", at(7), image_id="zzz"),  # not on the page
            Interaction("A", "dog", "click", at(8), image_id="a"),  # no dog page
        ]
    )
    assert [(p.results, p.clicked_ranks) for p in pages] == [(2, ()), (3, (3,))]
    assert unmatched == 2


def test_timeline_grows_with_the_decisions() -> None:
    series = timeline(observations(), points=4)
    # From the first event (09:01) to the last (09:54), evenly.
    assert [r.as_of for r in series] == [at(1) + timedelta(minutes=53 * i / 3) for i in range(4)]
    assert series[0].precision is None  # nothing reviewed at 09:01
    assert series[0].flagged.entered == 1
    assert series[-1].flagged.reviewed == 5


def test_gauges_carry_the_report_and_nan_when_undefined() -> None:
    gauges = BusinessGauges()
    gauges.update(build_report(observations()))
    value = gauges.registry.get_sample_value
    assert value("deeptrust_business_flag_precision", {"bound": "estimate"}) == pytest.approx(0.8)
    assert value("deeptrust_business_recall", {"bound": "estimate"}) == pytest.approx(8 / 18)
    assert value("deeptrust_business_lane_images", {"lane": "sampled", "state": "reviewed"}) == 4
    assert value("deeptrust_business_search_mean_reciprocal_rank") == pytest.approx(0.25)
    assert value("deeptrust_business_skipped_records", {"topic": "t.moderation.v1"}) == 2
    gauges.update(build_report(Observations(0.1)))
    precision = value("deeptrust_business_flag_precision", {"bound": "low"})
    assert precision is not None
    assert math.isnan(precision)


def test_plots_are_pngs(tmp_path: Path) -> None:
    paths = write_plots(timeline(observations(), points=5), tmp_path)
    assert [p.name for p in paths] == ["moderation.png", "search.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
