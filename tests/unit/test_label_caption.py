"""The labels captioner, its tagger, and the face finder, on the sample photographs."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from deeptrust.processors.backbones.label_caption import LABELS_END, LabelCaptioner
from deeptrust.processors.heuristics.faces import FaceFinder
from deeptrust.processors.heuristics.label_tags import SEPARATOR, LabelTagger
from deeptrust.processors.models import ModelSpec

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "images"


def sample(name: str) -> Image.Image:
    with Image.open(SAMPLES / name) as image:
        return image.convert("RGB")


def test_the_tagger_reads_the_labels_then_the_look() -> None:
    tagger = LabelTagger(ModelSpec("tag", "caption-labels", "caption-labels"))
    caption = "Egyptian cat, tabby; a landscape-format colour photo in mostly orange tones"
    assert tagger.tags(caption) == ["egyptian cat", "tabby", "colour", "orange"]
    # Without the separator it is the keyword tagger.
    assert tagger.tags("a dark black-and-white photo") == ["darkness", "monochrome"]
    assert SEPARATOR == LABELS_END


@pytest.fixture(scope="module")
def faces() -> FaceFinder:
    finder = FaceFinder()
    finder.load()
    return finder


def test_faces_in_the_portraits_and_none_in_the_still_lifes(faces: FaceFinder) -> None:
    assert faces.people_words(sample("grace_hopper.jpg")) == ["person", "face", "portrait"]
    assert faces.people_words(sample("camera.jpg")) == ["person", "face"]  # in profile, small
    for name in ("coffee.jpg", "chelsea.png", "rocket.jpg", "coins.jpg"):
        assert faces.people_words(sample(name)) == [], name


def test_faces_before_load_is_a_usage_error() -> None:
    with pytest.raises(AssertionError, match="load"):
        FaceFinder().faces(sample("coffee.jpg"))


def test_the_captioner_names_the_cat_and_the_person() -> None:
    spec = ModelSpec("caption", "mobilenet-labels", "mobilenet-labels", options={"faces": "true"})
    captioner = LabelCaptioner(spec)
    captioner.load()
    cat, hopper = captioner.predict([sample("chelsea.png"), sample("grace_hopper.jpg")])
    labels, _, look = cat.partition(LABELS_END)
    assert "tabby" in labels.split(", ")
    assert look == "a landscape-format colour photo in mostly orange tones"
    assert hopper.startswith("person, face, portrait, ")
    assert "military uniform" in hopper
