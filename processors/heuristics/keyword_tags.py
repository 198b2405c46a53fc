"""Search tags taken from a caption's words and normalised to a controlled vocabulary.

Words outside the vocabulary are dropped, aliases map to their canonical tag (``b&w`` and
``black-and-white`` both become ``monochrome``), and each tag appears once, in caption
order. The vocabulary can be extended through the spec's ``aliases`` option
(``alias=tag,alias=tag``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from processors.models import ModelSpec, register

VOCABULARY: dict[str, str] = {
    # colour and tone
    **{
        colour: colour
        for colour in (
            "red",
            "orange",
            "yellow",
            "green",
            "cyan",
            "blue",
            "purple",
            "pink",
            "white",
            "grey",
            "black",
            "brown",
        )
    },
    "gray": "grey",
    "colour": "colour",
    "color": "colour",
    "black-and-white": "monochrome",
    "b&w": "monochrome",
    "monochrome": "monochrome",
    "dark": "low-key",
    "bright": "high-key",
    # structure and framing
    "detailed": "detailed",
    "smooth": "minimal",
    "minimal": "minimal",
    "landscape-format": "landscape-orientation",
    "portrait-format": "portrait-orientation",
    "square": "square-format",
    # common subjects (from learned captioners)
    "dog": "dog",
    "puppy": "dog",
    "cat": "cat",
    "kitten": "cat",
    "person": "person",
    "man": "person",
    "woman": "person",
    "people": "people",
    "beach": "beach",
    "sea": "sea",
    "ocean": "sea",
    "mountain": "mountain",
    "tree": "tree",
    "flower": "flower",
    "car": "car",
    "motorcycle": "motorcycle",
    "building": "building",
    "city": "city",
    "sky": "sky",
    "food": "food",
    "coffee": "coffee",
    "rocket": "rocket",
    "space": "space",
    "astronaut": "astronaut",
    "coin": "coin",
    "coins": "coin",
    "camera": "camera",
}
_WORD = re.compile(r"[a-z&]+(?:-[a-z&]+)*")


class KeywordTagger:
    """Turns captions into vocabulary tags."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._vocabulary = dict(VOCABULARY)
        for pair in filter(None, spec.options.get("aliases", "").split(",")):
            alias, _, tag = pair.partition("=")
            self._vocabulary[alias.strip().lower()] = tag.strip().lower()

    def load(self) -> None:
        """Nothing to load: the vocabulary is in code and the spec."""

    def tags(self, caption: str) -> list[str]:
        """Return the vocabulary tags of one caption, in order, without repeats."""
        found = (self._vocabulary.get(word) for word in _WORD.findall(caption.lower()))
        return list(dict.fromkeys(tag for tag in found if tag))

    def predict(self, batch: Sequence[str]) -> list[list[str]]:
        """Return the tags of each caption."""
        return [self.tags(caption) for caption in batch]


register("tag", "keywords")(KeywordTagger)
