"""Tags read back from a labels caption: the labels it lists, then the keywords of the rest.

The pair of ``caption``/``mobilenet-labels``, whose captions are ``labels; look``: each
label becomes a tag as it is (the tag stage maps ``tabby`` onto the vocabulary and adds
``cat``, ``animal``), and the look gives the keyword tagger's tags (colours, tone). A
caption without the ``; `` separator gets keyword tags alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from deeptrust.processors.heuristics.keyword_tags import KeywordTagger
from deeptrust.processors.models import ModelSpec, register

SEPARATOR = "; "


class LabelTagger:
    """Caption in, its listed labels and keyword tags out."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._keywords = KeywordTagger(spec)

    def load(self) -> None:
        """Nothing to load."""

    def tags(self, caption: str) -> list[str]:
        """Return the labels before the separator, then the keyword tags after it."""
        labels, found, look = caption.partition(SEPARATOR)
        if not found:
            return self._keywords.tags(caption)
        listed = [label.strip().lower() for label in labels.split(",") if label.strip()]
        return list(dict.fromkeys(listed + self._keywords.tags(look)))

    def predict(self, batch: Sequence[str]) -> list[list[str]]:
        """Return the tags of each caption."""
        return [self.tags(caption) for caption in batch]


register("tag", "caption-labels")(LabelTagger)
