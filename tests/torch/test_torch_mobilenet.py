"""torch-mobilenet-v2 against the ONNX Runtime backbone, on the real weights and photographs.

Both backends read the same verified weights and pre-process alike; only the runtime
differs, so their float32 outputs may differ by summation order and nothing else. Runs in
.venv-train only (make test-torch); the main suite has no torch and skips it.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

import deeptrust.processors.backbones  # noqa: E402, F401 - registers both MobileNetV2 backends
from deeptrust.processors.backbones.mobilenet_v2 import (  # noqa: E402
    EMBEDDING_DIMENSIONS,
    l2_normalise,
    load_weights,
)
from deeptrust.processors.backbones.torch_mobilenet import TorchMobileNetV2, build_network  # noqa: E402
from deeptrust.processors.models import ModelSpec, load_model  # noqa: E402
from tests.images import sample_paths  # noqa: E402

# Pooled features reach about 5 in magnitude; float32 with another summation order (and
# BatchNorm folded on one side only) measured under 1e-5 apart, so 1e-4 leaves room for
# other CPUs' kernels without hiding a wrong layer, which moves them by whole units.
FEATURES_ATOL = 1e-4
LOGITS_ATOL = 1e-3
MIN_COSINE = 0.99999
# Half precision, measured on the CPU in torch against float32 on these photographs:
# cosine 0.99999 for float16 and 0.994 for bfloat16 (8 bits of mantissa).
MIN_COSINE_HALF = {"float16": 0.999, "bfloat16": 0.98}
CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def photos():
    return [Image.open(path).convert("RGB") for path in sample_paths()]


@pytest.fixture(scope="module")
def onnx_backbone():
    return load_model(ModelSpec("embed", "mobilenet-v2", "mobilenet-v2"))


@pytest.fixture(scope="module")
def reference(onnx_backbone, photos):
    return onnx_backbone.infer(photos)


@pytest.fixture(scope="module")
def model():
    spec = ModelSpec(
        "embed", "torch-mobilenet-v2", "torch-mobilenet-v2", options={"max_batch": "3"}
    )
    return load_model(spec)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (l2_normalise(a) * l2_normalise(b)).sum(axis=1)


def test_module_has_torchvisions_parameter_names():
    network = build_network(load_weights())
    assert set(network.state_dict()) == set(load_weights())
    assert not network.training


def test_features_and_logits_agree_with_onnx_runtime(model, photos, reference):
    output = model.infer(photos)
    assert output.features.shape == reference.features.shape == (8, EMBEDDING_DIMENSIONS)
    assert np.abs(output.features - reference.features).max() < FEATURES_ATOL
    assert np.abs(output.logits - reference.logits).max() < LOGITS_ATOL
    assert cosines(output.features, reference.features).min() > MIN_COSINE


def test_top1_imagenet_labels_agree_with_onnx_runtime(model, photos, onnx_backbone):
    torch_top1 = [labels[0].label for labels in model.top_labels(photos, k=1)]
    onnx_top1 = [labels[0].label for labels in onnx_backbone.top_labels(photos, k=1)]
    assert torch_top1 == onnx_top1
    by_photo = dict(zip([path.stem for path in sample_paths()], torch_top1, strict=True))
    assert by_photo["chelsea"].name in CATS


def test_predict_through_the_registry_returns_unit_vectors(model, photos, reference):
    vectors = np.array(model.predict(photos))
    assert vectors.shape == (8, EMBEDDING_DIMENSIONS)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert np.abs(vectors - l2_normalise(reference.features)).max() < FEATURES_ATOL
    assert model.predict([]) == []


def test_batches_agree_with_single_images(model, photos):
    # max_batch 3 splits the 8 photographs into chunks of 3, 3 and 2.
    batched = np.array(model.predict(photos))
    one_by_one = np.array([model.predict([photo])[0] for photo in photos])
    assert np.abs(batched - one_by_one).max() < FEATURES_ATOL


def test_contiguous_layout_gives_the_same_features(photos, reference):
    options = {"channels_last": "false"}
    model = load_model(ModelSpec("embed", "torch-mobilenet-v2", "nchw", options=options))
    assert np.abs(model.infer(photos).features - reference.features).max() < FEATURES_ATOL


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dtype": "float16"}, "needs a cuda device"),
        ({"dtype": "float64"}, "dtype must be one of"),
        ({"device": "tpu"}, "device must be"),
        ({"max_batch": "0"}, "at least 1"),
        ({"channels_last": "maybe"}, "channels_last must be"),
    ],
)
def test_invalid_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        TorchMobileNetV2(ModelSpec("embed", "torch-mobilenet-v2", "bad", options=options))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_fails_at_load():
    model = TorchMobileNetV2(
        ModelSpec("embed", "torch-mobilenet-v2", "gpu", options={"device": "cuda"})
    )
    with pytest.raises(RuntimeError, match="no CUDA"):
        model.load()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_cuda_features_agree_with_onnx_runtime(photos, reference, dtype):
    options = {"device": "cuda", "dtype": dtype}
    model = load_model(ModelSpec("embed", "torch-mobilenet-v2", dtype, options=options))
    output = model.infer(photos)
    minimum = MIN_COSINE if dtype == "float32" else MIN_COSINE_HALF[dtype]
    assert cosines(output.features, reference.features).min() > minimum
    if dtype != "bfloat16":
        assert (output.logits.argmax(axis=1) == reference.logits.argmax(axis=1)).all()


def test_the_onnx_block_features_are_the_detector_trainers_torch_features(photos):
    # The block probe is trained on torch's intermediate blocks (training/detector) and
    # served on ONNX Runtime's: the same numbers, at the tiles' own size, or the shipped
    # threshold would mean something else at run time.
    from deeptrust.processors.backbones.mobilenet_v2 import (
        INPUT_NAME,
        build_blocks_model,
        create_session,
        normalise_pixels,
    )
    from deeptrust.training.detector.detectors import MobileNetBlocks

    trainer = MobileNetBlocks()
    session = create_session(build_blocks_model(load_weights(), trainer.BLOCKS))
    tiles = np.stack(
        [
            np.asarray(photo.convert("RGB").resize((64, 64), Image.Resampling.BICUBIC))
            for photo in photos
        ]
    )
    for pixels in (tiles, tiles[:, :48, :40]):  # any tile size, not only 64
        expected = trainer(pixels)
        (served,) = session.run(None, {INPUT_NAME: normalise_pixels(pixels)})
        assert served.shape == expected.shape == (len(photos), 712)
        np.testing.assert_allclose(served, expected, atol=FEATURES_ATOL, rtol=1e-4)
