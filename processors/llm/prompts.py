"""Few-shot prompts for the tagger and the captioner, and parsers for the answers.

The offline model (Gemma 3 270M) is a base model, not an instruction-tuned one, so the
prompts show the pattern with worked examples and stop at the end of the line; an
instruction model behind vLLM reads them just as well. The parsers accept only what the
pattern allows, so a rambling answer yields fewer tags, never garbage ones.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

TAG_EXAMPLES = (
    ("a brown dog running on a sandy beach at sunset", "dog, beach, sand, sunset, running"),
    ("a bowl of ramen with an egg on a wooden table", "ramen, noodles, egg, bowl, food"),
    ("an old red tram in a snowy city street", "tram, street, snow, city, winter"),
)
CAPTION_EXAMPLES = (
    (
        "tabby cat; window screen",
        "a bright colour photo in mostly grey tones",
        "A tabby cat by a window.",
    ),
    ("espresso", "a warm colour photo in mostly brown tones", "A cup of espresso."),
    ("seashore; sandbar", "a bright colour photo in mostly blue tones", "A sandy seashore."),
    (
        "trolleybus; streetcar",
        "a dark colour photo in mostly red tones",
        "A red trolleybus in a street.",
    ),
)
LABEL_FLOOR = 0.1
MAX_LABELS = 3
STOP = ("\n",)
MAX_TAGS = 10
_TAG = re.compile(r"^[a-z][a-z0-9 '-]{0,30}$")


def tag_prompt(caption: str) -> str:
    """The prompt that asks for search tags for one caption."""
    shots = "".join(f"Caption: {c}\nTags: {t}\n\n" for c, t in TAG_EXAMPLES)
    return f"Search tags for photos, from their captions.\n\n{shots}Caption: {caption}\nTags:"


def parse_tags(answer: str) -> list[str]:
    """Comma-separated tags from the answer's first line: lower-case, deduplicated."""
    first_line = answer.strip().split("\n", 1)[0]
    tags: list[str] = []
    for raw in first_line.split(","):
        tag = " ".join(raw.strip().strip(".").lower().split())
        if _TAG.match(tag) and len(tag.split()) <= 3 and tag not in tags:
            tags.append(tag)
    return tags[:MAX_TAGS]


def caption_prompt(labels: Sequence[tuple[str, float]], appearance: str) -> str:
    """The prompt that turns a classifier's labels and the image's look into a sentence.

    Only confident labels are shown (the best one always), without their scores: a small
    model copies numbers into the sentence when it sees them.
    """
    ranked = sorted(labels, key=lambda label: -label[1])
    confident = [name for name, score in ranked[:MAX_LABELS] if score >= LABEL_FLOOR]
    seen = "; ".join(confident or [ranked[0][0]])
    shots = "".join(
        f"Classifier: {seen_text}\nLook: {look}\nCaption: {sentence}\n\n"
        for seen_text, look, sentence in CAPTION_EXAMPLES
    )
    return (
        "Short photo captions, from what an image classifier saw.\n\n"
        f"{shots}Classifier: {seen}\nLook: {appearance}\nCaption:"
    )


def parse_sentence(answer: str) -> str:
    """The answer's first line as one sentence, or empty if there is none."""
    sentence = " ".join(answer.strip().split("\n", 1)[0].split())
    if sentence and sentence[-1] not in ".!?":
        sentence += "."
    return sentence[:1].upper() + sentence[1:]
