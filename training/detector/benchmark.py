"""The leave-one-family-out protocol: splits, folds, the per-family evaluation, the tables.

Every generator family is held out in turn; a detector is trained on real photographs and
the other families, its operating threshold is fixed on separate calibration photographs
for a 5% false-positive rate, and it is tested on held-out photographs against the family
it never saw, under each condition of the robustness grid (applied to both classes).

Real photographs are split three ways by photograph (train / calibration / test), so no
photograph has crops on two sides; :func:`check_disjoint` proves it for the crops actually
cut. Pure logic, no torch: the unit tests run it on toy data.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from deeptrust.training.detector.data import Photo, split_photos
from deeptrust.training.detector.metrics import (
    HeldOutMetrics,
    Spread,
    spread_by_field,
    threshold_at_fpr,
)
from deeptrust.training.detector.robustness import TARGET_CONDITIONS

OPERATING_FPR = 0.05
TARGET_AP = 0.95
TARGET_RECALL = 0.80
TARGET_MAX_LOSS = 0.05
START, END = "<!-- bench-detector:start -->", "<!-- bench-detector:end -->"


@dataclass(frozen=True)
class TrainingSet:
    """What a detector is fitted on in one fold: real crops, by photograph, and each family."""

    real: np.ndarray
    real_photos: Sequence[str]
    fakes: Mapping[str, np.ndarray]

    def fake(self) -> np.ndarray:
        """Every training family's images as one array."""
        return np.concatenate(list(self.fakes.values()))

    def subset(self, real: int | None, per_family: int | None, seed: int) -> TrainingSet:
        """At most ``real`` real crops and ``per_family`` images of each family, drawn at random.

        A family's draw depends on its name, not on which other families are in the fold, so
        every fold that trains on it uses the same images (and their cached features).
        """
        keep = subset(len(self.real), real, seed)
        return TrainingSet(
            self.real[keep],
            [self.real_photos[i] for i in keep],
            {
                name: pixels[subset(len(pixels), per_family, seed + zlib.crc32(name.encode()))]
                for name, pixels in self.fakes.items()
            },
        )


def subset(total: int, count: int | None, seed: int) -> np.ndarray:
    """Indices of ``count`` of ``total`` items drawn without replacement, in their order.

    A random draw, not the first ``count``: a set may be stored in parts (the VAE family's
    prior samples, then its reconstructions). ``None`` or ``count >= total`` keeps them all.
    """
    if count is None or count >= total:
        return np.arange(total)
    if count < 1:
        raise ValueError("count must be at least 1")
    return np.sort(np.random.default_rng(seed).permutation(total)[:count])


@dataclass(frozen=True)
class PhotoSplit:
    """Real photographs on three sides, none on two."""

    train: list[Photo]
    calibration: list[Photo]
    test: list[Photo]


def split_three_ways(
    photos: Sequence[Photo], test_fraction: float, calibration_fraction: float, seed: int
) -> PhotoSplit:
    """Test photographs first, then calibration ones from the rest, stratified by source.

    ``calibration_fraction`` is a share of all photographs; each source keeps at least one
    photograph in training (:func:`~deeptrust.training.detector.data.split_photos`).
    """
    rest, test = split_photos(photos, test_fraction, seed)
    share = calibration_fraction / max(1e-9, 1.0 - test_fraction)
    train, calibration = split_photos(rest, share, seed + 1)
    return PhotoSplit(train, calibration, test)


def check_disjoint(sides: Mapping[str, Iterable[str]]) -> None:
    """Raise if any photograph name appears on two sides (e.g. the crops' ``photo``)."""
    seen: dict[str, str] = {}
    for side, names in sides.items():
        for name in set(names):
            if name in seen and seen[name] != side:
                raise AssertionError(f"photograph {name} is on both {seen[name]} and {side}")
            seen[name] = side


def folds(families: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(held-out family, training families) for each family in turn."""
    if len(set(families)) != len(families) or len(families) < 2:
        raise ValueError("need at least two distinct families")
    return [(held, [f for f in families if f != held]) for held in families]


def evaluate(
    calibration_real: np.ndarray,
    test_real: Mapping[str, np.ndarray],
    test_fake: Mapping[str, np.ndarray],
) -> tuple[float, dict[str, HeldOutMetrics]]:
    """One trained detector's operating threshold and its metrics under each condition.

    The threshold flags at most ``OPERATING_FPR`` of the calibration photographs' clean
    crops, and is then used unchanged on every condition; ``test_real`` and ``test_fake``
    map each condition to the scores of the same images after that condition.
    """
    threshold = threshold_at_fpr(calibration_real, OPERATING_FPR)
    return threshold, {
        condition: HeldOutMetrics.of(test_real[condition], test_fake[condition], threshold)
        for condition in test_real
    }


@dataclass(frozen=True)
class Verdict:
    """Whether one held-out family meets each target (mean over seeds)."""

    ap: bool
    recall: bool
    robust: bool

    @property
    def met(self) -> bool:
        """All targets met."""
        return self.ap and self.recall and self.robust


def verdict(by_condition: Mapping[str, Mapping[str, Spread]], robust_to: Sequence[str]) -> Verdict:
    """The targets on the clean condition and the loss under each of ``robust_to``.

    Targets: AP >= 0.95, fake recall >= 0.80 at <= 5% FPR on the held-out real photographs
    (``tpr_5``), and at most 5 points lost on AP and on that recall under each condition.
    """
    clean = by_condition["clean"]
    ap_ok = clean["ap"].mean >= TARGET_AP
    recall_ok = clean["tpr_5"].mean >= TARGET_RECALL
    robust_ok = all(
        clean[name].mean - by_condition[condition][name].mean <= TARGET_MAX_LOSS + 1e-12
        for condition in robust_to
        for name in ("ap", "tpr_5")
    )
    return Verdict(ap_ok, recall_ok, robust_ok)


def aggregate(
    runs: Sequence[Mapping[str, HeldOutMetrics]],
) -> dict[str, dict[str, Spread]]:
    """Per condition, each metric's spread over the seeds' runs."""
    conditions = list(runs[0])
    return {
        condition: spread_by_field([run[condition] for run in runs]) for condition in conditions
    }


MAIN_HEADER = (
    "| detector | held-out family | AP | AUROC | TPR @ 1% FPR | TPR @ 5% FPR "
    "| real acc. | fake acc. | targets |\n|---|---|---:|---:|---:|---:|---:|---:|---|"
)


def main_row(detector: str, family: str, spreads: Mapping[str, Spread], result: Verdict) -> str:
    """One row of the clean leave-one-family-out table."""
    cells = [spreads[name].text() for name in ("ap", "auroc", "tpr_1", "tpr_5")]
    cells += [spreads[name].text() for name in ("real_accuracy", "fake_accuracy")]
    missed = [
        n
        for n, ok in (("AP", result.ap), ("recall", result.recall), ("robust", result.robust))
        if not ok
    ]
    status = "met" if not missed else "missed: " + ", ".join(missed)
    return f"| {detector} | {family} | " + " | ".join(cells) + f" | {status} |"


def grid_header(conditions: Sequence[str]) -> str:
    """The robustness grid's header: one AP / TPR@5% column pair per condition."""
    names = " | ".join(conditions)
    return f"| detector | held-out family | {names} |\n|---|---|" + "---:|" * len(conditions)


def grid_row(detector: str, family: str, by_condition: Mapping[str, Mapping[str, Spread]]) -> str:
    """AP / TPR @ 5% FPR (means over seeds) under every condition."""
    cells = [
        f"{spreads['ap'].mean:.3f} / {spreads['tpr_5'].mean:.3f}"
        for spreads in by_condition.values()
    ]
    return f"| {detector} | {family} | " + " | ".join(cells) + " |"


def splice(document: str, section: str) -> str:
    """``document`` with the text between the benchmark's markers replaced (appended if absent).

    The rest of the document (the shipped probe's sections, which ``make train-detector``
    writes) is kept as it is.
    """
    block = f"{START}\n{section.strip()}\n{END}"
    if START in document and END in document:
        head, rest = document.split(START, 1)
        return head + block + rest.split(END, 1)[1]
    return document.rstrip() + "\n\n" + block + "\n"


def keep_benchmark(previous: str, document: str) -> str:
    """``document`` with ``previous``'s benchmark section, if it had one, spliced back in.

    ``make train-detector`` rewrites ``docs/detector.md`` whole; this keeps the section
    ``make bench-detector`` wrote.
    """
    if START not in previous or END not in previous:
        return document
    section = previous.split(START, 1)[1].split(END, 1)[0]
    return splice(document, section)


REQUIRED_RATE = 30.0
"""Uploads a second the default detect stage must sustain on two cores (issue 12)."""


@dataclass(frozen=True)
class Summary:
    """One detector over the finished held-out families (means over seeds)."""

    met: int
    families: int
    mean_ap: float
    worst_ap: float
    mean_tpr_5: float
    worst_tpr_5: float
    worst_loss: float

    def rank(self) -> tuple[int, float]:
        """Better means more families with every target met, then a higher mean AP."""
        return self.met, self.mean_ap


def summarise(
    by_family: Sequence[Mapping[str, Mapping[str, Spread]]], verdicts: Sequence[Verdict]
) -> Summary:
    """A detector's :class:`Summary` from its per-family aggregates and verdicts."""
    ap = [row["clean"]["ap"].mean for row in by_family]
    tpr = [row["clean"]["tpr_5"].mean for row in by_family]
    loss = max(
        row["clean"][metric].mean - row[condition][metric].mean
        for row in by_family
        for condition in TARGET_CONDITIONS
        for metric in ("ap", "tpr_5")
    )
    return Summary(
        sum(v.met for v in verdicts),
        len(by_family),
        float(np.mean(ap)),
        min(ap),
        float(np.mean(tpr)),
        min(tpr),
        loss,
    )


def profiles(
    aggregated: Mapping[tuple[str, str], Mapping[str, Mapping[str, Spread]]],
    verdicts: Mapping[tuple[str, str], Verdict],
    detector_names: Sequence[str],
    finished: Sequence[str],
    speeds: Mapping[str, tuple[float | None, str]],
) -> list[str]:
    """The evidence for a fast and a thorough profile, as Markdown lines.

    The fast profile is the best-ranked detector (:meth:`Summary.rank`) whose measured speed
    reaches :data:`REQUIRED_RATE`; a thorough profile is proposed only if a slower, measured
    detector ranks above it. ``speeds`` maps a detector to (uploads/s or None, its source).
    """
    out = [
        "",
        "### Choosing the shipped default: fast and thorough profiles",
        "",
        f"Over the {len(finished)} held-out families this run finished (means over seeds; "
        "**worst loss** is the largest drop of AP or of TPR @ 5% FPR from clean, over the "
        "families, under JPEG q75 or resize x0.5; the targets allow 0.05). Speed on two "
        f"cores against the issue's {REQUIRED_RATE:.0f} uploads/s:",
        "",
        "| detector | targets met | mean AP | worst AP | mean TPR @ 5% | worst TPR @ 5% "
        "| worst loss | uploads/s | speed source |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    summary: dict[str, Summary] = {}
    for detector in detector_names:
        keys = [(detector, family) for family in finished if (detector, family) in aggregated]
        if not keys:
            continue
        found = summarise([aggregated[k] for k in keys], [verdicts[k] for k in keys])
        summary[detector] = found
        rate, source = speeds.get(detector, (None, "not measured"))
        out.append(
            f"| {detector} | {found.met} of {found.families} | {found.mean_ap:.3f} "
            f"| {found.worst_ap:.3f} | {found.mean_tpr_5:.3f} | {found.worst_tpr_5:.3f} "
            f"| {found.worst_loss:.3f} | {'-' if rate is None else f'{rate:.1f}'} | {source} |"
        )
    rates = {name: speeds.get(name, (None, ""))[0] for name in summary}
    fast = [name for name, rate in rates.items() if rate is not None and rate >= REQUIRED_RATE]
    slow = [name for name, rate in rates.items() if rate is not None and rate < REQUIRED_RATE]
    out.append("")
    if not fast:
        out.append(f"- **No detector here is measured at {REQUIRED_RATE:.0f} uploads/s.**")
        return out
    best_fast = max(fast, key=lambda name: summary[name].rank())
    chosen = summary[best_fast]
    out.append(
        f"- **Fast profile** (reaches {REQUIRED_RATE:.0f} uploads/s): {best_fast}, targets met on "
        f"{chosen.met} of {chosen.families} families, mean AP {chosen.mean_ap:.3f}."
    )
    better = [name for name in slow if summary[name].rank() > chosen.rank()]
    if better:
        best_slow = max(better, key=lambda name: summary[name].rank())
        rate = rates[best_slow] or 1.0
        out.append(
            f"- **Thorough profile**: {best_slow} ranks above it (targets met on "
            f"{summary[best_slow].met}, mean AP {summary[best_slow].mean_ap:.3f}) at "
            f"{rate:.1f} uploads/s, {REQUIRED_RATE / rate:.0f}x short of the rate: for uploads "
            "that can wait, or a second look at what the fast profile leaves inconclusive."
        )
    else:
        out.append(
            "- **No thorough profile is earned here**: no slower detector ranks above the fast "
            "one (targets met, then mean AP), so a slower profile would cost time for no "
            "measured gain."
        )
    return out
