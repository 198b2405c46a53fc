"""hf-vit and onnx-vit, loaded through the registry from a tiny ViT saved in the test.

Runs in .venv-train only (make test-torch); the main suite skips it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import deeptrust.processors.transformers_backends  # noqa: E402, F401 - registers the backends
from deeptrust.processors.models import ModelSpec, load_model  # noqa: E402
from deeptrust.processors.transformers_backends.onnx_vit import Preprocessing, choose_providers  # noqa: E402
from deeptrust.schemas.events import Detection  # noqa: E402
from deeptrust.streams.images import FetchedImage, decode_image  # noqa: E402
from tests.images import sample_paths  # noqa: E402
from tests.torch.tiny import HIDDEN, tiny_vit  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
# float32 logits of the same graph on two runtimes: summation order differs, nothing else.
LOGITS_ATOL = 1e-4


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    return tiny_vit(tmp_path_factory.mktemp("vit"))


@pytest.fixture(scope="module")
def onnx_file(vit_dir, tmp_path_factory):
    """Exported by the command line the README documents."""
    out = tmp_path_factory.mktemp("onnx") / "vit.onnx"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "deeptrust.processors.transformers_backends.onnx_export",
            str(vit_dir),
            str(out),
        ],
        check=True,
        cwd=REPO,
        timeout=240,
    )
    return out


@pytest.fixture(scope="module")
def photos():
    """What the detect stage hands its detector: bytes and decoded pixels."""
    return [FetchedImage(p.read_bytes(), decode_image(p.read_bytes())) for p in sample_paths()]


def spec(task, backend, path, **options):
    return ModelSpec(task, backend, "tiny", options={"path": str(path), **options})


def test_hf_vit_detect_returns_a_verdict_per_photo(vit_dir, photos):
    detector = load_model(spec("detect", "hf-vit", vit_dir, device="cpu", max_batch="3"))
    verdicts = detector.predict(photos)
    assert len(verdicts) == len(photos) == 8
    for verdict in verdicts:
        assert isinstance(verdict, Detection)
        assert 0.0 <= verdict.ai_probability <= 1.0
        assert verdict.label == ("ai_generated" if verdict.ai_probability >= 0.5 else "real")
        assert verdict.model == "hf-vit/tiny"
    assert {verdict.label for verdict in verdicts} == {"ai_generated", "real"}
    assert detector.predict([]) == []


def test_hf_vit_detect_batches_agree_with_single_images(vit_dir, photos):
    detector = load_model(spec("detect", "hf-vit", vit_dir, max_batch="3"))
    images = [image.decoded.image for image in photos]
    batched = detector.logits(images)
    single = np.concatenate([detector.logits([image]) for image in images])
    assert batched.shape == (8, 2)
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_the_label_mapping_picks_the_ai_class(vit_dir, tmp_path, photos):
    images = [image.decoded.image for image in photos[:3]]
    by_name = load_model(spec("detect", "hf-vit", vit_dir)).predict(images)
    index_0 = load_model(spec("detect", "hf-vit", vit_dir, ai_index="0")).predict(images)
    for a, b in zip(by_name, index_0, strict=True):
        assert a.ai_probability + b.ai_probability == pytest.approx(1.0)
    hub_style = tiny_vit(tmp_path / "hub", labels={0: "REAL", 1: "FAKE"})
    fake = load_model(spec("detect", "hf-vit", hub_style, ai_label="fake")).predict(images)
    assert [v.ai_probability for v in fake] == pytest.approx([v.ai_probability for v in by_name])
    unnamed = tiny_vit(tmp_path / "unnamed", labels={0: "LABEL_0", 1: "LABEL_1"})
    with pytest.raises(ValueError, match="ai_index"):
        load_model(spec("detect", "hf-vit", unnamed))


def test_hf_vit_embed_is_unit_norm_cls_features(vit_dir, photos):
    embedder = load_model(spec("embed", "hf-vit", vit_dir, device="cpu"))
    vectors = np.array(embedder.predict([image.decoded.image for image in photos]))
    assert vectors.shape == (8, HIDDEN)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1]), "different photos, different features"


def test_device_and_dtype_options_are_checked(vit_dir):
    with pytest.raises(ValueError, match="cuda"):
        load_model(spec("detect", "hf-vit", vit_dir, device="cpu", dtype="float16"))
    with pytest.raises(ValueError, match="dtype"):
        load_model(spec("detect", "hf-vit", vit_dir, device="cpu", dtype="float64"))
    with pytest.raises(ValueError, match="path"):
        load_model(ModelSpec("detect", "hf-vit", "tiny"))


def test_numpy_preprocessing_matches_the_image_processor(vit_dir, photos):
    processor = transformers.AutoImageProcessor.from_pretrained(vit_dir)
    images = [image.decoded.image for image in photos]
    expected = processor(images=images, return_tensors="np")["pixel_values"]
    config = json.loads((vit_dir / "preprocessor_config.json").read_text())
    got = np.stack([Preprocessing.from_config(config)(image) for image in images])
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_onnx_export_matches_torch_on_sample_photos(vit_dir, onnx_file, photos):
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(onnx_file))
    assert graph.opset_import[0].version >= 17
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param, "dynamic batch axis"
    processor = transformers.AutoImageProcessor.from_pretrained(vit_dir)
    model = transformers.AutoModelForImageClassification.from_pretrained(vit_dir).eval()
    pixels = processor(images=[image.decoded.image for image in photos], return_tensors="pt")
    with torch.inference_mode():
        expected = model(**pixels).logits.numpy()
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    for batch in (1, 3, 8):  # the batch axis really is dynamic
        (logits,) = session.run(
            ["logits"], {"pixel_values": pixels["pixel_values"][:batch].numpy()}
        )
        np.testing.assert_allclose(logits, expected[:batch], atol=LOGITS_ATOL, rtol=0)
    print(
        f"torch vs onnx: max |logit| {np.abs(expected).max():.2f}, "
        f"max |difference| {np.abs(logits - expected).max():.2e}"
    )


def test_onnx_backends_agree_with_hf_backends(vit_dir, onnx_file, photos):
    images = [image.decoded.image for image in photos]
    hf_logits = load_model(spec("detect", "hf-vit", vit_dir)).logits(images)
    onnx_detector = load_model(spec("detect", "onnx-vit", onnx_file, max_batch="3"))
    assert onnx_detector.providers[-1] == "CPUExecutionProvider"
    np.testing.assert_allclose(onnx_detector.run(images), hf_logits, atol=LOGITS_ATOL, rtol=0)
    hf_vectors = np.array(load_model(spec("embed", "hf-vit", vit_dir)).predict(images))
    onnx_vectors = np.array(load_model(spec("embed", "onnx-vit", onnx_file)).predict(images))
    np.testing.assert_allclose(onnx_vectors, hf_vectors, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(onnx_vectors, axis=1), 1.0, atol=1e-5)


def test_onnx_backend_needs_no_torch_and_gives_the_same_verdicts(vit_dir, onnx_file, photos):
    script = textwrap.dedent(
        """
        import json, sys

        # Any import of torch or transformers now fails, as where they are not installed.
        # (Not sys.modules[name] = None: libraries such as scipy look torch up there.)
        class Refuse:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers"):
                    raise ModuleNotFoundError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, Refuse())
        import deeptrust.processors.registry  # every backend registers without them
        from deeptrust.processors.models import ModelSpec, load_model
        from deeptrust.streams.images import FetchedImage, decode_image
        paths = sys.argv[2:]
        spec = ModelSpec("detect", "onnx-vit", "tiny", options={"path": sys.argv[1]})
        data = [open(path, "rb").read() for path in paths]
        photos = [FetchedImage(d, decode_image(d)) for d in data]
        verdicts = load_model(spec).predict(photos)
        assert not any(m.split(".")[0] in ("torch", "transformers") for m in sys.modules)
        print(json.dumps([v.model_dump() for v in verdicts]))
        """
    )
    paths = [str(path) for path in sample_paths()]
    result = subprocess.run(
        [sys.executable, "-c", script, str(onnx_file), *paths],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    from_onnx = [Detection(**v) for v in json.loads(result.stdout.strip().splitlines()[-1])]
    from_torch = load_model(spec("detect", "hf-vit", vit_dir)).predict(photos)
    assert [v.label for v in from_onnx] == [v.label for v in from_torch]
    assert [v.ai_probability for v in from_onnx] == pytest.approx(
        [v.ai_probability for v in from_torch], abs=1e-5
    )


def test_providers_keep_only_what_this_onnxruntime_has():
    available = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    requested = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(requested, available) == available
    assert choose_providers(["TensorrtExecutionProvider"], ["CPUExecutionProvider"]) == [
        "CPUExecutionProvider"
    ]
