"""Search tags taken from a caption's words, each a term of the controlled vocabulary.

Words with no tag are dropped, aliases map to their tag (``b&w`` and ``black-and-white``
both become ``monochrome``, ``puppy`` becomes ``dog``), and each tag appears once, in
caption order. Every tag is a term of ``processors/vocabulary/terms.tsv``, so the tag
stage's vocabulary mapping keeps them as they are and adds their broader terms. The
caption's framing words (``landscape-format``, ``square``) give no tag: the shape of the
frame is not what a photo shows, and no WordNet noun means it. More aliases can be given
through the spec's ``aliases`` option (``alias=tag,alias=tag``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from deeptrust.processors.models import ModelSpec, register

COLOURS = [
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
]
VOCABULARY: dict[str, str] = {
    # colour and tone
    **{colour: colour for colour in COLOURS},
    "gray": "grey",
    "colour": "colour",
    "color": "colour",
    "black-and-white": "monochrome",
    "b&w": "monochrome",
    "monochrome": "monochrome",
    "dark": "darkness",
    "bright": "brightness",
    # detail
    "detailed": "detail",
    "smooth": "minimalism",
    "minimal": "minimalism",
    # common subjects (from learned captioners)
    "dog": "dog",
    "puppy": "dog",
    "cat": "cat",
    "kitten": "cat",
    "person": "person",
    "man": "man",
    "woman": "woman",
    "people": "people",
    "beach": "beach",
    "sea": "sea",
    "ocean": "ocean",
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
