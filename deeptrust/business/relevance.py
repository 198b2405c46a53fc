"""Offline search relevance: recall@k and nDCG@k of ranked results against graded judgments.

The online metrics (click-through, MRR) say how search did for users; these say how it
does on a fixed judged query set, so a captioner or tagger change can be compared before
it ships. Grades: 2 the image's subject, 1 in the image but not its subject, 0 (or
unjudged) not relevant.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class JudgedQuery:
    """A query, its category (people, nature...) and the grade of each relevant image."""

    query: str
    category: str
    grades: Mapping[str, int]


def recall_at(ranked: Sequence[str], grades: Mapping[str, int], k: int) -> float:
    """Share of the relevant images (grade >= 1) found in the first ``k`` results."""
    relevant = {image for image, grade in grades.items() if grade > 0}
    if not relevant:
        raise ValueError("a judged query needs at least one relevant image")
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def dcg(gains: Iterable[int]) -> float:
    """Discounted cumulative gain, (2^grade - 1) / log2(rank + 1) (Jarvelin & Kekalainen)."""
    return float(sum((2**grade - 1) / math.log2(rank + 1) for rank, grade in enumerate(gains, 1)))


def ndcg_at(ranked: Sequence[str], grades: Mapping[str, int], k: int) -> float:
    """DCG of the first ``k`` results over that of the ideal ranking of the judged images."""
    ideal = dcg(sorted(grades.values(), reverse=True)[:k])
    if ideal == 0:
        raise ValueError("a judged query needs at least one relevant image")
    return dcg(grades.get(image, 0) for image in ranked[:k]) / ideal


def load_judgments(path: Path) -> list[JudgedQuery]:
    """Read ``query<TAB>category<TAB>image<TAB>grade`` lines (``#`` starts a comment)."""
    grades: dict[str, dict[str, int]] = defaultdict(dict)
    categories: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        query, category, image, grade = line.split("\t")
        grades[query][image] = int(grade)
        categories[query] = category
    return [JudgedQuery(q, categories[q], g) for q, g in grades.items()]
