"""The mobilenet-blocks detect backend against the trainer's torch path, on a head fitted here.

The head is a real one, fitted in the test by the shipped recipe's code (training/detector/
shipped.py) on crops of the sample photographs against the shipped draws of the project's
generators; the backend must give each image the probability the trainer's own features
and tiles give it, and the label the head's two thresholds say. Runs in .venv-train only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from deeptrust.processors.backbones.mobilenet_v2 import WEIGHTS_SHA256  # noqa: E402
from deeptrust.processors.detectors.block_probe import BLOCKS, MobileNetBlocksDetector  # noqa: E402
from deeptrust.processors.detectors.tiles import TILES_PER_IMAGE, tiles  # noqa: E402
from deeptrust.processors.models import ModelSpec  # noqa: E402
from deeptrust.streams.images import FetchedImage, decode_image  # noqa: E402
from deeptrust.training.detector import data  # noqa: E402
from deeptrust.training.detector.detectors import MobileNetBlocks  # noqa: E402
from deeptrust.training.detector.shipped import fit_shipped_head, image_probabilities  # noqa: E402
from tests.images import sample_paths  # noqa: E402

GENERATED = Path(__file__).resolve().parents[2] / "samples" / "generated"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    extractor = MobileNetBlocks()
    rng = np.random.default_rng(0)
    photos = data.sample_photos()
    real = data.to_array(c.image for c in data.random_crops(photos[:6], 240, rng, 64))
    calibration = data.to_array(c.image for c in data.random_crops(photos[6:], 120, rng, 64))
    fakes = {
        family: data.to_array(
            Image.open(path) for path in sorted((GENERATED / family).glob("*.png"))[:80]
        )
        for family in ("dcgan", "vae")
    }
    head = fit_shipped_head(
        extractor,
        real,
        fakes,
        calibration,
        l2=1.0,
        metadata={"backbone_weights_sha256": WEIGHTS_SHA256, "blocks": list(BLOCKS)},
    )
    path = tmp_path_factory.mktemp("head") / "blocks.npz"
    head.save(path)
    return extractor, head, path


def test_tiles_cover_the_image_at_three_scales_without_squashing_it():
    photo = Image.new("RGB", (2000, 1000), (10, 20, 30))
    cut = tiles(photo)
    assert cut.shape == (TILES_PER_IMAGE, 64, 64, 3)
    assert TILES_PER_IMAGE == 5
    assert np.all(cut == (10, 20, 30))


def test_the_backend_scores_uploads_as_the_trainer_would(fitted):
    extractor, head, path = fitted
    spec = ModelSpec("detect", "mobilenet-blocks", "mobilenet-blocks", "1", {"head": str(path)})
    backend = MobileNetBlocksDetector(spec)
    backend.load()
    uploads = [p.read_bytes() for p in sample_paths()[:3]]
    uploads += [p.read_bytes() for p in sorted((GENERATED / "dcgan").glob("*.png"))[-2:]]
    batch = [FetchedImage(raw, decode_image(raw)) for raw in uploads]
    verdicts = backend.predict(batch)
    expected = image_probabilities(head, extractor, [tiles(item.decoded.image) for item in batch])
    np.testing.assert_allclose([v.ai_probability for v in verdicts], expected, atol=1e-4)
    assert [v.label for v in verdicts] == [head.label(float(p)) for p in expected]
    assert {v.model_version.split("+")[1] for v in verdicts} == {head.digest()[:12]}


def test_the_backend_refuses_a_head_for_other_blocks(fitted, tmp_path):
    _, head, _ = fitted
    head.metadata["blocks"] = [1, 2, 3]
    head.save(tmp_path / "other.npz")
    spec = ModelSpec("detect", "mobilenet-blocks", "b", "1", {"head": str(tmp_path / "other.npz")})
    with pytest.raises(ValueError, match="blocks"):
        MobileNetBlocksDetector(spec).load()
