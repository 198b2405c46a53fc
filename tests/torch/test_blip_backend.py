"""hf-blip, loaded through the registry from a tiny BLIP saved in the test.

Random weights caption gibberish, so only types, counts and batch consistency are checked.
Runs in .venv-train only (make test-torch); the main suite skips it.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import deeptrust.processors.transformers_backends  # noqa: F401 - registers the backends
from deeptrust.processors.models import ModelSpec, load_model
from deeptrust.processors.transformers_backends.blip import EMPTY_CAPTION
from deeptrust.schemas.events import Caption
from deeptrust.streams.images import decode_image
from tests.images import sample_paths
from tests.torch.tiny import tiny_blip


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory):
    return tiny_blip(tmp_path_factory.mktemp("blip"))


@pytest.fixture(scope="module")
def images():
    return [decode_image(path.read_bytes()).image for path in sample_paths()]


def captioner(path, **options):
    spec = ModelSpec("caption", "hf-blip", "tiny", options={"path": str(path), **options})
    return load_model(spec)


def test_hf_blip_captions_every_image(blip_dir, images):
    # min_new_tokens keeps random weights from ending at once, so there are words to compare.
    model = captioner(blip_dir, device="cpu", max_new_tokens="6", min_new_tokens="3")
    captions = model.predict(images)
    assert len(captions) == len(images) == 8
    for text in captions:
        assert isinstance(text, str)
        assert text != EMPTY_CAPTION
        assert 1 <= len(text.split()) <= 6 * 2  # word pieces merge; never more than tokens
        Caption(text=text, model=model.spec.label)  # what the caption stage will build
    assert len(set(captions)) > 1, "captions depend on the image"
    assert model.predict([]) == []


def test_hf_blip_batches_agree_with_single_images(blip_dir, images):
    model = captioner(blip_dir, max_new_tokens="6", min_new_tokens="3", max_batch="3")
    batched = model.predict(images)
    assert batched == [model.predict([image])[0] for image in images]


def test_an_immediate_end_token_still_gives_a_caption(blip_dir, images):
    captions = captioner(blip_dir, max_new_tokens="1").predict(images[:2])
    assert all(isinstance(text, str) and text for text in captions)


def test_half_precision_is_refused_on_cpu(blip_dir):
    with pytest.raises(ValueError, match="cuda"):
        captioner(blip_dir, device="cpu", dtype="bfloat16")
