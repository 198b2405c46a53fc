import io

import numpy as np
from PIL import Image, ImageFilter

import deeptrust.processors.heuristics  # noqa: F401 - registers the backends
from deeptrust.processors.heuristics.colour_texture import DIMENSIONS, embed
from deeptrust.processors.heuristics.keyword_tags import VOCABULARY, KeywordTagger
from deeptrust.processors.heuristics.statistics_caption import describe
from deeptrust.processors.models import ModelSpec, load_model
from deeptrust.processors.vocabulary.terms import read_terms
from deeptrust.streams.images import FetchedImage, decode_image
from tests.images import generator_png, jpeg_bytes, sample_paths


def fetched(data):
    return FetchedImage(data=data, decoded=decode_image(data))


def test_provenance_flags_generator_text_chunks_and_not_plain_photos():
    detector = load_model(ModelSpec("detect", "provenance", "provenance"))
    traced, plain = detector.predict([fetched(generator_png()), fetched(jpeg_bytes())])
    assert traced.label == "ai_generated"
    assert traced.signals == ["png-text:parameters"]
    assert plain.label == "real"
    assert plain.signals == []
    assert plain.ai_probability < traced.ai_probability


def test_provenance_reads_the_exif_software_field():
    image = Image.new("RGB", (32, 32))
    exif = image.getexif()
    exif[0x0131] = "Adobe Firefly 3"
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    detector = load_model(ModelSpec("detect", "provenance", "provenance"))
    (verdict,) = detector.predict([fetched(buffer.getvalue())])
    assert verdict.signals == ["exif-software:Adobe Firefly 3"]


def test_embedding_is_a_deterministic_unit_vector():
    image = Image.open(sample_paths()[0])
    first, second = embed(image), embed(image)
    assert first.shape == (DIMENSIONS,)
    assert np.isclose(np.linalg.norm(first), 1.0)
    assert np.array_equal(first, second)


def test_embedding_moves_more_under_blur_than_between_identical_images():
    image = Image.open(sample_paths()[0]).convert("RGB")
    blurred = image.filter(ImageFilter.GaussianBlur(4))
    assert np.linalg.norm(embed(image) - embed(blurred)) > 0.05


def test_caption_reports_greyscale_and_orientation():
    assert (
        describe(Image.new("L", (300, 100), 128))
        == "a smooth, landscape-format black-and-white photo"
    )


def test_caption_names_the_dominant_colour():
    assert "blue" in describe(Image.new("RGB", (100, 100), (20, 40, 220)))


def test_tagger_normalises_aliases_and_drops_unknown_words():
    tagger = KeywordTagger(ModelSpec("tag", "keywords", "keywords", options={"aliases": "pup=dog"}))
    assert tagger.tags("a b&w photo of a pup and a puppy on a Beach, grey sky") == [
        "monochrome",
        "dog",
        "beach",
        "grey",
        "sky",
    ]


def test_every_keyword_tag_is_a_vocabulary_term():
    terms = {entry.term for entry in read_terms()}
    assert set(VOCABULARY.values()) <= terms


def test_keyword_tags_of_a_statistics_caption_leave_out_the_frame():
    tagger = KeywordTagger(ModelSpec("tag", "keywords", "keywords"))
    caption = describe(Image.new("L", (300, 100), 128))
    assert "landscape-format" in caption
    assert tagger.tags(caption) == ["minimalism", "monochrome"]
