"""Models that need no weights: provenance metadata, image statistics, caption keywords.

They are real and deterministic, and every event says which of them produced it. They are
the pipeline's defaults until learned models replace them, and the provenance detector
stays as an independent second opinion beside any pixel-based one.
"""

from deeptrust.processors.heuristics import (
    colour_texture,
    keyword_tags,
    label_tags,
    provenance,
    statistics_caption,
)

__all__ = ["colour_texture", "keyword_tags", "label_tags", "provenance", "statistics_caption"]
