"""How well free tags land on the vocabulary.

Run ``python -m deeptrust.processors.vocabulary.evaluate``.

A small labelled set of tags a tagger may produce that are *not* vocabulary terms: modern
or informal words, phrases, and junk that must be dropped. Each positive lists the terms
that would be a right answer. The report counts, per route, right / wrong / dropped, and
sweeps the embedding threshold over the tags that reach the embedding route, which is how
``DEFAULT_THRESHOLD`` was chosen (``docs/tags.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deeptrust.processors.vocabulary.mapper import DEFAULT_THRESHOLD, TagMapper

EXPECTED: dict[str, frozenset[str]] = {
    tag: frozenset(terms.split("|"))
    for tag, terms in {
        "kitten": "cat",
        "kitty": "cat",
        "doggo": "dog",
        "pupper": "dog",
        "puppy": "dog",
        "puppies": "dog",
        "smartphone": "cellular telephone|phone",
        "iphone": "cellular telephone|phone|ipod",
        "selfie": "photo|portrait",
        "cityscape": "city|skyline",
        "seascape": "sea|coast|beach|ocean",
        "motorbike": "motorcycle|moped",
        "coffee cup": "coffee mug|cup|coffee",
        "snowy mountain": "mountain|alp",
        "red car": "car|sports car|convertible|racer|cab",
        "night sky": "sky|night",
        "sandy beach": "beach|sandbar",
        "city street": "street|city",
        "pine tree": "tree|pine",
        "palm tree": "tree|palm",
        "black cat": "cat",
        "white dog": "dog",
        "tshirt": "jersey|t-shirt",
        "laptop computer": "laptop|notebook|computer",
        "tv screen": "television|screen|monitor",
        "portrait photo": "portrait|photo",
        "old car": "car|model t|jalopy",
        "little girl": "girl|child",
        "young man": "man|boy",
        "elderly woman": "woman",
        "crowd of people": "crowd|people",
        "wild animal": "animal|wildlife",
        "pet cat": "cat|pet",
        "skateboarding": "skateboard",
        "sunny": "sun|sunlight",
        "daylight": "sunlight|light",
        "woods": "forest",
        "seaside": "coast|beach",
        "ocean waves": "wave|ocean|sea",
        "hiking": "hike",
        "cute puppy": "dog",
        "tabby cat": "tabby|cat",
        "espresso shot": "espresso|coffee",
        "coffee shop": "coffee|restaurant|shop",
        "toy car": "toy|car",
        "sailing": "sailing boat|boat|sail",
        "snowboard": "ski|snow",
        "teddybear": "teddy",
        "aeroplane": "airplane",
        "bbq": "barbecue|grill",
        "sushi": "food|dish",
        "croissant": "bread|baked goods|bun",
        "cappuccino": "coffee|espresso",
        "skyscraper": "building|tower",
        "sedan": "car",
        "toddler": "child",
        "sunflower": "flower",
        "ladybird": "ladybug",
        "automobile": "car",
    }.items()
}
JUNK: tuple[str, ...] = (
    "asdfgh", "qwerty", "vibes", "lorem ipsum", "xyzzy", "4k", "hdr", "beautiful", "cozy",
    "aesthetic", "blurry", "love", "cute", "amazing", "instagood", "photooftheday",
    "nofilter", "trending", "random", "stuff", "thing", "misc", "untitled", "img_2041",
    "dsc0001", "hello world", "todo", "happiness", "boring", "interesting", "nice", "wow",
    "lol", "n/a", "none", "unknown", "various", "quality", "good", "bad",
)  # fmt: skip
THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)


@dataclass(frozen=True)
class Outcome:
    """What the mapper did with one labelled tag."""

    tag: str
    term: str | None
    route: str
    score: float
    right: bool


def outcomes(mapper: TagMapper) -> list[Outcome]:
    """Run every labelled tag through ``mapper``, keeping every embedding match and its cosine."""
    tags = [*EXPECTED, *JUNK]
    saved, mapper.threshold = mapper.threshold, -1.0
    try:
        matches = mapper.match(tags)
    finally:
        mapper.threshold = saved
    return [
        Outcome(tag, None, "dropped", 0.0, False)
        if m is None
        else Outcome(tag, m.term, m.route, m.score, m.term in EXPECTED.get(tag, frozenset()))
        for tag, m in zip(tags, matches, strict=True)
    ]


def sweep(results: list[Outcome]) -> list[tuple[float, int, int, int, int]]:
    """Per threshold: (threshold, right, wrong, dropped positives, junk kept), embedding route."""
    embedded = [r for r in results if r.route == "embedding"]
    rows = []
    for threshold in THRESHOLDS:
        kept = [r for r in embedded if r.score >= threshold]
        right = sum(r.right for r in kept)
        wrong = sum(not r.right and r.tag in EXPECTED for r in kept)
        dropped = sum(r.tag in EXPECTED and r.score < threshold for r in embedded)
        junk = sum(r.tag not in EXPECTED for r in kept)
        rows.append((threshold, right, wrong, dropped, junk))
    return rows


def _route_at(outcome: Outcome, threshold: float) -> str:
    if outcome.route == "embedding" and outcome.score < threshold:
        return "dropped"
    return outcome.route


def main() -> None:
    """Print the evaluation as markdown."""
    mapper = TagMapper()
    mapper.load()
    results = outcomes(mapper)
    print(f"{len(EXPECTED)} tags with right answers, {len(JUNK)} junk tags\n")
    print(f"At the default threshold, {DEFAULT_THRESHOLD}:\n")
    print("| route | tags | right | wrong | junk kept |\n| --- | --- | --- | --- | --- |")
    for route in ("exact", "wordnet", "embedding"):
        hits = [r for r in results if _route_at(r, DEFAULT_THRESHOLD) == route]
        wrong = sum(not r.right and r.tag in EXPECTED for r in hits)
        junk = sum(r.tag not in EXPECTED for r in hits)
        print(f"| {route} | {len(hits)} | {sum(r.right for r in hits)} | {wrong} | {junk} |")
    left_out = [r for r in results if _route_at(r, DEFAULT_THRESHOLD) == "dropped"]
    positives = sum(r.tag in EXPECTED for r in left_out)
    print(f"\nDropped: {len(left_out) - positives} junk tags, {positives} with a right answer.")
    print("\n| embedding threshold | right | wrong | positives dropped | junk kept |")
    print("| --- | --- | --- | --- | --- |")
    for threshold, right, wrong, dropped, junk in sweep(results):
        mark = " (default)" if np.isclose(threshold, DEFAULT_THRESHOLD) else ""
        print(f"| {threshold:.2f}{mark} | {right} | {wrong} | {dropped} | {junk} |")
    print("\n| tag | term | route | cosine | right |\n| --- | --- | --- | --- | --- |")
    for r in sorted(results, key=lambda r: (r.route, -r.score, r.tag)):
        verdict = "yes" if r.right else ("junk" if r.tag not in EXPECTED else "no")
        if r.route == "embedding" and r.score < DEFAULT_THRESHOLD:
            verdict += ", dropped"
        cosine = f"{r.score:.3f}" if r.route == "embedding" else ""
        print(f"| {r.tag} | {r.term or ''} | {r.route} | {cosine} | {verdict} |")


if __name__ == "__main__":
    main()
